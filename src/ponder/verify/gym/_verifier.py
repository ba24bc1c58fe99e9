"""The ``gym`` verifier: each reasoning-gym dataset's own scorer judges the tagged answer."""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from multiprocessing.process import BaseProcess

from ponder._closing import Closing
from ponder.errors import ConfigError, DataError, UserError, VerifyError
from ponder.records import Verdict
from ponder.text import tagged_answer
from ponder.verify.gym._library import import_gym
from ponder.verify.gym._reference import GymReference
from ponder.verify.gym._worker import READY, Reply, serve

ANSWER_TAG = "answer"
"""The tag a gym task asks the model to put its final answer in: ``<answer>...</answer>``."""

DEFAULT_TIMEOUT_S = 10.0
"""Time limit of one score (the scorers do string work and small sympy checks: milliseconds)."""

_START_TIMEOUT_S = 120.0  # starting a worker imports reasoning-gym: seconds on a loaded machine


class _Worker:
    """One scoring process (see ``_worker``) and the parent's end of its pipe."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process that runs llama.cpp
        self.conn, child = ctx.Pipe()
        self.process: BaseProcess = ctx.Process(
            target=serve, args=(child,), name="ponder-gym-scorer", daemon=True
        )
        self.process.start()
        child.close()
        if not self.conn.poll(_START_TIMEOUT_S):
            self.stop()
            raise VerifyError(f"the gym scoring worker did not start in {_START_TIMEOUT_S:g}s")
        try:
            ok, message = self.conn.recv()
        except EOFError:
            self.stop()
            raise VerifyError(
                f"the gym scoring worker exited while starting (exit code {self.process.exitcode})"
            ) from None
        if not ok:
            self.stop()
            raise UserError(str(message))
        assert message == READY

    def score(self, reference: str, answer: str, timeout_s: float) -> Reply:
        """The worker's reply, or (False, why) when it overran the limit or died (then it is
        stopped, and the caller starts another)."""
        try:
            self.conn.send((reference, answer))
        except OSError:  # it died after its last reply
            self.stop()
            return False, f"the scoring worker had ended (exit code {self.process.exitcode})"
        if not self.conn.poll(timeout_s):
            self.stop()
            return False, f"the scorer took longer than {timeout_s:g}s (stopped)"
        try:
            reply: Reply = self.conn.recv()
        except EOFError:
            self.process.join(5)
            code = self.process.exitcode
            self.stop()
            return False, f"the scorer ended its worker process (exit code {code})"
        return reply

    @property
    def alive(self) -> bool:
        return self.process.is_alive() and not self.conn.closed

    def stop(self) -> None:
        self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)


class GymVerifier(Closing):
    """Scores samples of gym tasks with the scorer of the dataset that generated the problem.

    For each sample: the answer is the content of the last ``<answer>...</answer>`` outside
    ``<think>`` blocks (:func:`ponder.text.tagged_answer`); none gives ``unparsed``. Otherwise the
    dataset's ``score_answer(answer, entry)`` decides, on the entry regenerated from the problem's
    :class:`GymReference`: its score (partial credit in [0, 1]) is the verdict's ``score``, and
    the verdict is ``correct`` for the full score 1.0, ``incorrect`` below it. A scorer that
    raises, returns something other than a number in [0, 1], overruns the time limit or kills its
    process, and a problem that cannot be regenerated (another reasoning-gym version installed, a
    changed generator), give ``error`` with the cause in the detail.

    Scorers run in one worker process (started on first use, replaced after a timeout or a
    crash), since some of them evaluate the answer text as Python; see ``ponder.verify.gym``.

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
            GymReference.from_json(reference)
        except DataError as exc:
            return Verdict(status="error", detail=f"invalid reference: {exc.message}")
        answer = tagged_answer(text, ANSWER_TAG)
        if answer is None:
            return Verdict(status="unparsed", detail=f"no <{ANSWER_TAG}>...</{ANSWER_TAG}> found")
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
