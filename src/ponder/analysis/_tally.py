"""What a run's verdicts say per problem: the one verifier rule and the one per-problem tally."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ponder.errors import UserError
from ponder.records import Problem, Sample, Verdict
from ponder.store import RunSpec, Store

DEFAULT_VERIFIER = "math"
"""The verifier of runs whose task spec declares none (stored before specs recorded it)."""


def declared_verifier(spec: RunSpec) -> str:
    """The verifier kind a run's task declares: what ``ponder verify`` runs on it."""
    return str(spec.task.get("verifier", DEFAULT_VERIFIER))


def run_verifier(
    store: Store, run_id: str, verifier: str | None = None, *, need_verdicts: bool = True
) -> str:
    """The verifier whose verdicts stand for a run's results.

    The rule, used by every command and by export and analysis: ``verifier`` when given (it must
    have verdicts for the run); else the verifier the run's task declares
    (:func:`declared_verifier`, the one ``ponder sample``, ``run`` and ``verify`` use) when it has
    verdicts for the run; else the
    first verifier, by name, that has; else, for a run with no verdicts at all, the declared one
    (an error when ``need_verdicts``).

    Args:
        store: The store holding the run.
        run_id: A full run id.
        verifier: A verifier name asked for by the user, e.g. ``math`` or ``code:timeout=5``.
        need_verdicts: Whether a run without verdicts is an error (reading results); false to
            show a run not verified yet.

    Raises:
        UserError: ``verifier`` has no verdicts for the run, or ``need_verdicts`` and the run
            has none at all.
    """
    found = sorted(store.verifiers(run_id))
    if verifier is not None:
        if verifier not in found:
            raise UserError(
                f"run {run_id} has no verdicts from verifier {verifier!r} "
                f"(it has: {', '.join(found) or 'none'})",
                hint=f"ponder verify {run_id}",
            )
        return verifier
    declared = declared_verifier(store.get_run(run_id).spec)
    if declared in found:
        return declared
    if found:
        return found[0]
    if not need_verdicts:
        return declared
    raise UserError(f"run {run_id} has no verdicts yet", hint=f"ponder verify {run_id}")


@dataclass(frozen=True)
class ProblemTally:
    """One problem's samples and their verdicts from one verifier, counted."""

    problem_id: str
    reference: str | None
    samples: int
    """Samples stored, verified or not."""
    verified: int
    """Samples with a verdict."""
    correct: int
    unparsed: int
    errors: int
    first_correct_position: int | None
    """Position of the first correct sample among the verified ones, in sample-index order."""
    first_correct_answer: str | None
    """What the verifier extracted from that sample."""
    prompt_tokens: int
    completion_tokens: int


def tally(
    problems: Sequence[Problem | str],
    samples: Sequence[Sample],
    verdicts: Mapping[int, Verdict],
) -> list[ProblemTally]:
    """Count each problem's samples and verdicts, in the order of ``problems``.

    Samples of problems not listed are ignored; tokens count every stored sample, verified or not.
    """
    ids = [p if isinstance(p, str) else p.id for p in problems]
    refs = {p.id: p.reference for p in problems if not isinstance(p, str)}
    by_problem: dict[str, list[Sample]] = {pid: [] for pid in ids}
    for s in samples:
        if s.problem_id in by_problem:
            by_problem[s.problem_id].append(s)
    return [_one(pid, refs.get(pid), by_problem[pid], verdicts) for pid in ids]


def _one(
    problem_id: str, reference: str | None, samples: list[Sample], verdicts: Mapping[int, Verdict]
) -> ProblemTally:
    verified = correct = unparsed = errors = 0
    first: int | None = None
    answer: str | None = None
    for s in sorted(samples, key=lambda s: s.index):
        v = verdicts.get(s.id) if s.id is not None else None
        if v is None:
            continue
        if v.status == "correct":
            correct += 1
            if first is None:
                first, answer = verified, v.extracted
        unparsed += v.status == "unparsed"
        errors += v.status == "error"
        verified += 1
    return ProblemTally(
        problem_id=problem_id,
        reference=reference,
        samples=len(samples),
        verified=verified,
        correct=correct,
        unparsed=unparsed,
        errors=errors,
        first_correct_position=first,
        first_correct_answer=answer,
        prompt_tokens=sum(s.prompt_tokens for s in samples),
        completion_tokens=sum(s.completion_tokens for s in samples),
    )


def run_tallies(store: Store, run_id: str, verifier: str) -> list[ProblemTally]:
    """:func:`tally` of a stored run's problems (in run order) with ``verifier``'s verdicts."""
    return tally(store.problems(run_id), store.samples(run_id), store.verdicts(run_id, verifier))
