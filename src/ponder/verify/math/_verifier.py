"""The math verifier: extract + compare, each check in a worker process with a hard time limit."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.queues import SimpleQueue

from ponder._closing import Closing
from ponder.errors import ConfigError, VerifyError
from ponder.records import Verdict, VerdictStatus
from ponder.text import DEFAULT_STRATEGIES, ExtractStrategy, check_strategies, extract_answer
from ponder.verify.math._equiv import is_equivalent, warm_up

CheckResult = tuple[VerdictStatus, str | None, str]
"""(status, extracted answer, detail) as a worker returns it."""
CheckFn = Callable[[str, str, tuple[ExtractStrategy, ...]], CheckResult]

# How often the waiting loop looks for newly started checks; bounds how late a deadline is noticed.
_POLL_S = 0.02
# A check running when a worker process died is retried once; a second death is its verdict.
_MAX_WORKER_DEATHS = 2

# The worker's end of the "(round, check index) started" channel, set by the pool initializer.
_started: SimpleQueue[tuple[int, int]] | None = None


def check_one(reference: str, text: str, strategies: tuple[ExtractStrategy, ...]) -> CheckResult:
    """Extract the answer from ``text`` and compare it with ``reference``.

    A comparison that fails (math-verify missing or crashing) is an ``error`` with the cause in
    the detail, never ``incorrect``: the answer was not judged.
    """
    extracted = extract_answer(text, strategies)
    if extracted is None:
        return "unparsed", None, "no answer found"
    try:
        equal = is_equivalent(reference, extracted)
    except VerifyError as exc:
        return "error", extracted, str(exc)
    return ("correct" if equal else "incorrect"), extracted, ""


def _init_worker(started: SimpleQueue[tuple[int, int]]) -> None:
    global _started
    _started = started
    # Pay the sympy / math-verify import before the first check's clock starts.
    warm_up()


def _run_check(
    round_id: int,
    index: int,
    reference: str,
    text: str,
    strategies: tuple[ExtractStrategy, ...],
    check: CheckFn,
) -> tuple[CheckResult, float]:
    """Worker entry point: announce the start of check ``index``, run it, return it and its time."""
    if _started is not None:
        _started.put((round_id, index))
    t0 = time.perf_counter()
    try:
        result = check(reference, text, strategies)
    except Exception as exc:  # noqa: BLE001 -- one bad sample becomes an "error" verdict, not a crash
        result = ("error", None, f"{type(exc).__name__}: {exc}")
    return result, time.perf_counter() - t0


def _cpu_count() -> int:
    """CPUs this process may run on (a container or taskset may allow fewer than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


@dataclass
class _Pool:
    executor: ProcessPoolExecutor
    started: SimpleQueue[tuple[int, int]]

    def kill(self) -> None:
        """Stop now, killing workers (a hung check never returns by itself)."""
        kill_workers = getattr(self.executor, "kill_workers", None)  # Python >= 3.14
        if kill_workers is not None:
            kill_workers()
        else:
            # Before 3.14 the executor has no public way to stop a busy worker.
            for process in list(getattr(self.executor, "_processes", {}).values()):
                process.kill()
        self.close()

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.started.close()


@dataclass
class _Batch:
    """Bookkeeping of one verify_many call across pool restarts."""

    items: Sequence[tuple[str | None, str]]
    verdicts: list[Verdict | None]
    deaths: dict[int, int] = field(default_factory=dict)
    startless_breaks: int = 0


class MathVerifier(Closing):
    """Checks final answers of math problems: extract the answer, compare it with the reference.

    Each check runs in a worker process (math-verify's own timeouts need a process's main thread,
    and a runaway sympy computation can only be stopped by killing its process). A check that runs
    longer than ``timeout_s`` gets an ``error`` verdict; its pool is killed and replaced, and the
    other checks go on. The pool is created on first use and reused across calls; :meth:`close` (or
    leaving a ``with`` block) shuts it down. One instance must not be used from several threads at
    once.

    Args:
        strategies: Answer extraction strategies, in the order tried (see ``ExtractStrategy``).
        timeout_s: Time limit of one check (extraction and comparison), counted from when it starts.
        workers: Worker processes; defaults to the number of CPUs this process may use.

    Raises:
        ConfigError: an unknown strategy, a non-positive time limit or worker count.
    """

    # The function each worker runs per item; a subclass may swap it for another picklable
    # top-level function.
    check: CheckFn = staticmethod(check_one)

    def __init__(
        self,
        strategies: Sequence[ExtractStrategy] = DEFAULT_STRATEGIES,
        timeout_s: float = 5.0,
        workers: int | None = None,
    ) -> None:
        self._strategies = check_strategies(strategies)
        if not timeout_s > 0:
            raise ConfigError(f"timeout_s must be > 0 seconds, got {timeout_s}")
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        self._timeout_s = float(timeout_s)
        self._workers = workers or _cpu_count()
        self._pool: _Pool | None = None
        # Tags start messages, so that one left in the channel by an earlier round is ignored.
        self._round = 0

    @property
    def name(self) -> str:
        """``math``, or ``math:<strategies>`` when the extraction order is not the default.

        Different strategies give different verdicts, so they must not share stored results.
        """
        if self._strategies == DEFAULT_STRATEGIES:
            return "math"
        return "math:" + ",".join(self._strategies)

    @property
    def strategies(self) -> tuple[ExtractStrategy, ...]:
        return self._strategies

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    @property
    def workers(self) -> int:
        return self._workers

    def verify_many(self, items: Sequence[tuple[str | None, str]]) -> list[Verdict]:
        """Verdicts for ``(reference, sample text)`` pairs, in the same order."""
        batch = _Batch(items, [None] * len(items))
        todo = []
        for i, (reference, _) in enumerate(items):
            if reference is None:
                batch.verdicts[i] = Verdict(status="error", detail="no reference answer")
            else:
                todo.append(i)
        try:
            while todo:
                todo = self._run_round(batch, todo)
        except BaseException:
            # Interrupted (or failed as a whole): leave no checks running for the next call to meet.
            self._discard_pool(kill=True)
            raise
        assert all(v is not None for v in batch.verdicts)
        return [v for v in batch.verdicts if v is not None]

    def _run_round(self, batch: _Batch, todo: list[int]) -> list[int]:
        """Run ``todo`` until all are done or the pool had to go; returns what is left to run."""
        pool = self._ensure_pool()
        self._round += 1
        futures: dict[Future[tuple[CheckResult, float]], int] = {}
        started_at: dict[int, float] = {}
        try:
            for i in todo:
                reference, text = batch.items[i]
                assert reference is not None
                future = pool.executor.submit(
                    _run_check, self._round, i, reference, text, self._strategies, self.check
                )
                futures[future] = i
        except BrokenProcessPool:
            # A worker died while the pool sat idle (say, the OOM killer); start afresh.
            self._discard_pool(kill=True)
            return self._after_worker_death(batch, todo, started_at)
        pending = set(futures)
        while pending:
            self._drain_started(pool, started_at)
            now = time.monotonic()
            expired = {
                f
                for f in pending
                if not f.done() and now - started_at.get(futures[f], now) > self._timeout_s
            }
            if expired:
                for f in expired:
                    batch.verdicts[futures[f]] = self._timed_out()
                # Results that arrived meanwhile are kept; everything else reruns on a fresh pool.
                for f in pending - expired:
                    if f.done():
                        self._record(batch, futures[f], f)
                self._discard_pool(kill=True)
                return sorted(futures[f] for f in pending if batch.verdicts[futures[f]] is None)
            deadlines = [
                started_at[futures[f]] + self._timeout_s
                for f in pending
                if futures[f] in started_at
            ]
            wait_s = max(0.0, min([_POLL_S, *(d - now for d in deadlines)]))
            done, pending = wait(pending, timeout=wait_s, return_when=FIRST_COMPLETED)
            broken = False
            for f in done:
                broken |= self._record(batch, futures[f], f)
            if broken:
                self._drain_started(pool, started_at)
                self._discard_pool(kill=True)
                unfinished = [
                    futures[f] for f in done | pending if batch.verdicts[futures[f]] is None
                ]
                return self._after_worker_death(batch, unfinished, started_at)
        return []

    def _record(
        self,
        batch: _Batch,
        index: int,
        future: Future[tuple[CheckResult, float]],
    ) -> bool:
        """Store the verdict of a finished future; True if the pool broke (the verdict waits)."""
        try:
            (status, extracted, detail), elapsed = future.result()
        except BrokenProcessPool:
            return True
        except Exception as exc:  # noqa: BLE001 -- e.g. an unpicklable result: this item's verdict
            batch.verdicts[index] = Verdict(status="error", detail=f"{type(exc).__name__}: {exc}")
            return False
        # The deadline loop can miss a fast overrun; the worker's own clock settles it.
        if elapsed > self._timeout_s:
            batch.verdicts[index] = self._timed_out()
        else:
            batch.verdicts[index] = Verdict(status=status, extracted=extracted, detail=detail)
        return False

    def _after_worker_death(
        self, batch: _Batch, unfinished: list[int], started_at: dict[int, float]
    ) -> list[int]:
        """Decide which checks rerun after a worker process died; returns them."""
        if not any(i in started_at for i in unfinished):
            # No check was running, so the pool itself cannot start (its initializer fails).
            batch.startless_breaks += 1
            if batch.startless_breaks >= _MAX_WORKER_DEATHS:
                raise VerifyError(
                    "the math verifier's worker processes keep dying before any check starts",
                    hint=(
                        "a script that uses MathVerifier needs an `if __name__ == '__main__':` "
                        "guard, and math-verify must import: python -c 'import math_verify'"
                    ),
                )
            return sorted(unfinished)
        retry = []
        for i in sorted(unfinished):
            if i in started_at:
                # Any check running at the time may be what killed its worker; retry it once.
                batch.deaths[i] = batch.deaths.get(i, 0) + 1
            if batch.deaths.get(i, 0) >= _MAX_WORKER_DEATHS:
                batch.verdicts[i] = Verdict(
                    status="error", detail="worker process died while checking this sample"
                )
            else:
                retry.append(i)
        return retry

    def _timed_out(self) -> Verdict:
        return Verdict(status="error", detail=f"timed out after {self._timeout_s:g}s")

    def _drain_started(self, pool: _Pool, started_at: dict[int, float]) -> None:
        now = time.monotonic()
        while not pool.started.empty():
            round_id, index = pool.started.get()
            if round_id == self._round:
                started_at.setdefault(index, now)

    def _ensure_pool(self) -> _Pool:
        if self._pool is None:
            ctx = multiprocessing.get_context(
                "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            )
            started: SimpleQueue[tuple[int, int]] = ctx.SimpleQueue()
            executor = ProcessPoolExecutor(
                max_workers=self._workers,
                mp_context=ctx,
                initializer=_init_worker,
                initargs=(started,),
            )
            self._pool = _Pool(executor, started)
        return self._pool

    def _discard_pool(self, *, kill: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            if kill:
                pool.kill()
            else:
                pool.close()

    def close(self) -> None:
        """Shut the worker pool down (a later call starts a new one)."""
        self._discard_pool(kill=False)

    def __repr__(self) -> str:
        return (
            f"MathVerifier(strategies={self._strategies!r}, timeout_s={self._timeout_s:g}, "
            f"workers={self._workers})"
        )
