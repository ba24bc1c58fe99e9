"""Verify the stored samples of a run and store the verdicts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ponder.records import Verdict
from ponder.store import Store
from ponder.tasks import continuation_markers
from ponder.text import cut_continuation

if TYPE_CHECKING:
    from ponder.verify import Verifier


def judge(
    verifier: Verifier, markers: tuple[str, ...], items: Sequence[tuple[str | None, str]]
) -> list[Verdict]:
    """Verdicts of ``(reference, sample text)`` items, each text judged without a made-up next
    problem that the model wrote after its answer (:func:`ponder.text.cut_continuation`): the one
    way the drivers judge stored samples."""
    return verifier.verify_many([(ref, cut_continuation(text, markers)) for ref, text in items])


@dataclass(frozen=True)
class VerifyReport:
    run_id: str
    verifier: str
    checked: int
    statuses: dict[str, int] = field(default_factory=dict)


def verify_run(
    store: Store,
    run_id: str,
    verifier: Verifier,
    *,
    force: bool = False,
    chunk: int = 256,
    on_progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Verify every sample of ``run_id`` that has no verdict from ``verifier`` (all of them with ``force``).

    Verdicts are committed chunk by chunk, so an interrupted verification resumes where it stopped.
    Each text is judged without a made-up next problem that the model wrote after its answer in the
    format of the run's task (:func:`ponder.tasks.continuation_markers`, :func:`ponder.text.cut_continuation`).
    """
    todo = store.unverified(run_id, verifier.name, force=force)
    # A made-up next problem after the answer (in the task's own format) is not part of it.
    markers = continuation_markers(store.get_run(run_id).spec.task)
    counts: Counter[str] = Counter()
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        verdicts = judge(verifier, markers, [(ref, s.text) for s, ref in part])
        store.add_verdicts(
            verifier.name, [(s.id or 0, v) for (s, _), v in zip(part, verdicts, strict=True)]
        )
        counts.update(v.status for v in verdicts)
        if on_progress is not None:
            on_progress(len(part))
    return VerifyReport(run_id, verifier.name, len(todo), dict(counts))
