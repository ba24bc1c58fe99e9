"""The ``gym`` verifier: each reasoning-gym dataset's own scorer judges the tagged answer."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ponder
from ponder._closing import Closing
from ponder.errors import ConfigError, DataError, UserError, VerifyError
from ponder.records import Verdict
from ponder.verify.code import SandboxLimits, sandbox_plan
from ponder.verify.gym._library import import_gym
from ponder.verify.gym._reference import ANSWER_TAG, GymReference, find_answer
from ponder.verify.gym._worker import Reply

DEFAULT_TIMEOUT_S = 10.0
"""Time limit of one score (the scorers do string work and small sympy checks: milliseconds)."""

_START_TIMEOUT_S = 120.0  # starting a worker imports reasoning-gym: seconds on a loaded machine


_BOOT = """
import json, sys
config = json.loads(sys.stdin.readline())
sys.path[:0] = config["path"]
from ponder.verify.gym._worker import serve_lines
serve_lines(config)
"""
"""Started with ``python -I -S`` inside the sandbox: the import path comes from the parent."""


class _Worker:
    """One sandboxed scoring process (see ``_worker``) and the parent's ends of its pipes."""

    def __init__(self) -> None:
        plan = sandbox_plan()
        limits = SandboxLimits(memory_bytes=4 << 30)  # sympy and numpy map a lot of address space
        src_root = str(Path(ponder.__file__).resolve().parent.parent)
        path = [src_root, *(p for p in sys.path if p and os.path.isdir(p) and p != src_root)]
        argv = [*plan.argv(limits, sys.executable, keep=[src_root]), "-c", _BOOT]
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
                cwd="/",
                text=True,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            self._stderr.close()
            raise VerifyError(
                f"the gym scoring sandbox ({plan.info.mode}) could not start: {exc}"
            ) from exc
        config = {
            "path": path,
            "drop_to_uid": plan.drop_to_uid,
            "limits": {
                "memory_bytes": limits.memory_bytes,
                "max_processes": limits.max_processes,
                "file_bytes": limits.file_bytes,
            },
        }
        reply = self._exchange(json.dumps(config), _START_TIMEOUT_S)
        if reply is None:
            why = self._stderr_tail() or f"exit code {self.process.poll()}"
            self.stop()
            raise VerifyError(
                f"the gym scoring sandbox ({plan.info.mode}) did not start: {why}",
                hint=f"check that this works: {' '.join(plan.argv(limits, sys.executable))} -c pass",
            )
        ok, message = reply
        if not ok:
            self.stop()
            raise UserError(str(message))

    def _exchange(self, line: str, timeout_s: float) -> list[Any] | None:
        """Send one line and read the reply; None when the worker died or overran ``timeout_s``."""
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(line + "\n")
            stdin.flush()
        except OSError:
            return None
        ready, _, _ = select.select([stdout], [], [], timeout_s)
        if not ready:
            return None
        text = stdout.readline()
        if not text:  # it ended: let the launcher report the exit code
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
            return None
        return json.loads(text)

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-2000:].decode(errors="replace").strip()

    def score(self, reference: str, answer: str, timeout_s: float) -> Reply:
        """The worker's reply, or (False, why) when it overran the limit or died (then it is
        stopped, and the caller starts another)."""
        reply = self._exchange(json.dumps([reference, answer]), timeout_s)
        if reply is not None:
            return bool(reply[0]), reply[1]
        code = self.process.poll()
        self.stop()
        if code is None:
            return False, f"the scorer took longer than {timeout_s:g}s (stopped)"
        return False, f"the scorer ended its worker process (exit code {code})"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(5)
        for stream in (self.process.stdin, self.process.stdout, self._stderr):
            if stream is not None:
                stream.close()


class GymVerifier(Closing):
    """Scores samples of gym tasks with the scorer of the dataset that generated the problem.

    For each sample: the answer is the content of the last ``<answer>...</answer>`` outside
    ``<think>`` blocks (:func:`ponder.text.tagged_answer`), or what the problem's reference names
    in its ``extract`` (e.g. the tag, else the last number); none gives ``unparsed``. Otherwise the
    dataset's ``score_answer(answer, entry)`` decides, on the entry regenerated from the problem's
    :class:`GymReference`: its score (partial credit in [0, 1]) is the verdict's ``score``, and
    the verdict is ``correct`` for the full score 1.0, ``incorrect`` below it. A scorer that
    raises, returns something other than a number in [0, 1], overruns the time limit or kills its
    process, and a problem that cannot be regenerated (another reasoning-gym version installed, a
    changed generator), give ``error`` with the cause in the detail.

    Scorers run in one sandboxed worker process (started on first use, replaced after a timeout
    or a crash), since some of them evaluate the answer text as Python; see ``ponder.verify.gym``.

    Args:
        timeout_s: Time limit of one score, in seconds.
    """

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if not timeout_s > 0:
            raise ConfigError(f"timeout_s must be positive, got {timeout_s!r}")
        self._timeout_s = float(timeout_s)
        self._worker: _Worker | None = None

    @property
    def name(self) -> str:
        """``gym``, or ``gym:timeout=<s>`` when the time limit is not the default (a different
        limit can give different verdicts). The reasoning-gym version is checked per problem."""
        if self._timeout_s == DEFAULT_TIMEOUT_S:
            return "gym"
        return f"gym:timeout={self._timeout_s:g}"

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    def verify_many(self, items: Sequence[tuple[str | None, str]]) -> list[Verdict]:
        """Verdicts for ``(reference JSON, sample text)`` pairs, in the same order.

        Raises:
            UserError: reasoning-gym is not installed (the hint is the install command).
            VerifyError: the scoring worker cannot start.
        """
        return [self._verify(reference, text) for reference, text in items]

    def _verify(self, reference: str | None, text: str) -> Verdict:
        if reference is None:
            return Verdict(status="error", detail="no reference")
        try:
            ref = GymReference.from_json(reference)
        except DataError as exc:
            return Verdict(status="error", detail=f"invalid reference: {exc.message}")
        answer = find_answer(text, ref.extract)
        if answer is None:
            wanted = ", ".join(
                f"<{ANSWER_TAG}>...</{ANSWER_TAG}>" if m == "tag" else m for m in ref.extract
            )
            return Verdict(status="unparsed", detail=f"no answer found (looked for: {wanted})")
        if self._worker is None or not self._worker.alive:
            import_gym()  # a missing install is the user's to fix, said before any worker starts
            self._worker = _Worker()
        ok, result = self._worker.score(reference, answer, self._timeout_s)
        if not ok:
            return Verdict(status="error", extracted=answer, detail=str(result))
        assert isinstance(result, float)
        return Verdict(
            status="correct" if result >= 1.0 else "incorrect", extracted=answer, score=result
        )

    def close(self) -> None:
        """Stop the scoring worker (a later call starts another); idempotent."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
