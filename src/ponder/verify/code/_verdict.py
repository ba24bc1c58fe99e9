"""From what the sandbox reports about one check to a :class:`CodeVerdict`.

Only the harness can write a record carrying the check's nonce on the result channel, and it
writes ``passed`` only after ``check()`` returned; so a pass needs that record *and* a clean exit.
Everything else is a failure, a timeout or an error, explained as well as the evidence allows.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ponder.verify.code._mode import SandboxLimits

CodeStatus = Literal["passed", "failed", "timeout", "error"]


@dataclass(frozen=True)
class CodeVerdict:
    """The outcome of running a program against its test.

    Attributes:
        status: ``passed`` (``check(entry_point)`` returned), ``failed`` (an assertion, an
            exception, a crash, a missing entry point, code that is not Python), ``timeout``, or
            ``error`` (the test or setup code is broken, or the sandbox failed: not the program's
            fault).
        detail: Why, in a short line; empty for ``passed``.
    """

    status: CodeStatus
    detail: str = ""


_HINTS = {
    signal.SIGSEGV: "segmentation fault",
    signal.SIGBUS: "bus error",
    signal.SIGABRT: "aborted",
    signal.SIGFPE: "arithmetic error",
    signal.SIGILL: "illegal instruction",
    signal.SIGKILL: "killed: out of memory, or a process limit?",
}


def _records(channel: str, nonce: str) -> list[tuple[str, str]]:
    """``(kind, detail)`` for each harness record; lines without the nonce are the program's."""
    pattern = re.compile(r"(passed|failed|error):" + re.escape(nonce) + r":(.*)")
    found = []
    for line in channel.splitlines():
        match = pattern.search(line)
        if match:
            found.append((match.group(1), match.group(2).strip()))
    return found


def _last_output_line(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return "; last output: " + (line if len(line) <= 200 else line[:197] + "...")


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def interpret(
    result: Mapping[str, Any], nonce: str, timeout: float, limits: SandboxLimits
) -> CodeVerdict:
    """The verdict of one check from the zygote's result record."""
    if "sandbox_error" in result:
        return CodeVerdict(
            "error", f"the sandbox could not run the check: {result['sandbox_error']}"
        )
    if result.get("timed_out"):
        return CodeVerdict("timeout", f"timeout after {timeout:g} s")
    records = _records(str(result.get("channel", "")), nonce)
    sig: int | None = result.get("signal")
    code: int | None = result.get("exit")
    status = f"was killed by {signal_name(sig)}" if sig is not None else f"exited with {code}"
    if records:
        kind, detail = records[0]
        if kind == "passed":
            if code == 0:
                return CodeVerdict("passed", "")
            return CodeVerdict("failed", f"check() returned, but then the process {status}")
        return CodeVerdict("failed" if kind == "failed" else "error", detail)
    # No record from the harness: the program ended the process before the test finished.
    tail = _last_output_line(str(result.get("output", "")))
    if sig is not None:
        if sig == signal.SIGXCPU:
            return CodeVerdict(
                "timeout", f"timeout: CPU time limit ({int(timeout) + 2} s) exceeded"
            )
        if sig == signal.SIGXFSZ:
            hint = f"output or a file over the {limits.file_bytes >> 20} MiB limit"
        else:
            hint = _HINTS.get(sig, "")  # type: ignore[call-overload]
        hint = f" ({hint})" if hint else ""
        return CodeVerdict(
            "failed", f"the program crashed: killed by {signal_name(sig)}{hint}{tail}"
        )
    if code == 0:
        return CodeVerdict(
            "failed", f"the program exited (status 0) before the test finished{tail}"
        )
    return CodeVerdict(
        "failed", f"the program exited with status {code} before the test finished{tail}"
    )
