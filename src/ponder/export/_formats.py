"""The records of each export format, built from a run's samples and verdicts.

Every builder is a generator of plain JSON-serialisable dicts; what it leaves out it counts in a
:class:`Tally`, so the caller can say what was skipped and why.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ponder.export._prompts import PromptBuilder
from ponder.records import Message, Problem, Sample, Verdict
from ponder.store import RunSpec

SKIP_REASONS: dict[str, str] = {
    "no_verified": "no verified sample",
    "no_correct": "no correct sample",
    "no_rejected": "no incorrect sample",
    "no_rejected_unparsed": "no incorrect or unparsed sample",
}
"""Why a problem gave no record: key -> words for the summary line."""


@dataclass(frozen=True)
class ProblemSamples:
    """One problem of a run with its samples (in index order) and their verdicts (None: unverified)."""

    problem: Problem
    samples: list[tuple[Sample, Verdict | None]]


@dataclass(frozen=True)
class RunSamples:
    """What every format is built from: a run, whose verdicts are used, and its problems."""

    run_id: str
    spec: RunSpec
    verifier: str
    problems: list[ProblemSamples]
    prompts: PromptBuilder

    def base_metadata(self, problem_id: str) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "problem_id": problem_id,
            "model": self.spec.model,
            "task": self.spec.task_name,
            "verifier": self.verifier,
            "prompt_rebuilt": self.prompts.rebuilt,
        }


@dataclass
class Tally:
    """Counts of what an export left out."""

    skipped_problems: Counter[str] = field(default_factory=Counter)
    """Problems that gave no record, by reason (a key of :data:`SKIP_REASONS`)."""
    duplicates: int = 0
    """Samples dropped because an identical text of the same problem was already used."""
    unverified: int = 0
    """Samples without a verdict from the chosen verifier."""


def _messages(messages: list[Message]) -> list[dict[str, Any]]:
    return [m.model_dump() for m in messages]


def _assistant(text: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": text}]


def _dedupe(samples: list[Sample], tally: Tally) -> list[Sample]:
    """The samples whose text (ignoring surrounding whitespace) was not seen earlier in the list."""
    seen: set[str] = set()
    kept = []
    for s in samples:
        key = s.text.strip()
        if key in seen:
            tally.duplicates += 1
            continue
        seen.add(key)
        kept.append(s)
    return kept


# --- all samples: jsonl and parquet ---------------------------------------------------------------


def sample_records(run: RunSamples, tally: Tally) -> Iterator[dict[str, Any]]:
    """Every sample as a JSON-lines record: the stored sample, its problem, run and verdict.

    ``verdict`` is the verdict as a dict, or None when the sample has none from the verifier.
    """
    for group in run.problems:
        for sample, verdict in group.samples:
            record: dict[str, Any] = sample.model_dump()
            record["question"] = group.problem.question
            record["reference"] = group.problem.reference
            record["model"] = run.spec.model
            record["task"] = run.spec.task_name
            record["verifier"] = run.verifier
            record["verdict"] = verdict.model_dump() if verdict is not None else None
            if verdict is None:
                tally.unverified += 1
            yield record


def flat_records(run: RunSamples, tally: Tally) -> Iterator[dict[str, Any]]:
    """:func:`sample_records` with the verdict flattened into ``verdict_*`` fields (for tables)."""
    for record in sample_records(run, tally):
        verdict = record.pop("verdict") or {}
        for key in ("status", "extracted", "score", "detail"):
            record[f"verdict_{key}"] = verdict.get(key)
        yield record


# --- supervised fine-tuning -----------------------------------------------------------------------


def sft_records(run: RunSamples, tally: Tally, *, dedupe: bool = True) -> Iterator[dict[str, Any]]:
    """Chat-format SFT records of the verified-correct samples: the prompt, then the sample."""
    for group in run.problems:
        verified = [(s, v) for s, v in group.samples if v is not None]
        tally.unverified += len(group.samples) - len(verified)
        correct = [s for s, v in verified if v.status == "correct"]
        if not correct:
            tally.skipped_problems["no_verified" if not verified else "no_correct"] += 1
            continue
        if dedupe:
            correct = _dedupe(correct, tally)
        prompt = _messages(run.prompts.prompt(group.problem))
        for s in correct:
            yield {
                "messages": [*prompt, *_assistant(s.text)],
                "metadata": {**run.base_metadata(group.problem.id), "sample_index": s.index},
            }


# --- preference pairs -----------------------------------------------------------------------------


def pick_pairs(
    n_chosen: int, n_rejected: int, cap: int | None, rng: random.Random
) -> list[tuple[int, int]]:
    """Up to ``cap`` distinct (chosen, rejected) index pairs, spreading use over both sides.

    Both sides are shuffled, then paired diagonally (the d-th round pairs chosen ``c`` with rejected
    ``c + d``), so the first pairs use distinct samples on both sides as long as there are any.
    """
    chosen = list(range(n_chosen))
    rejected = list(range(n_rejected))
    rng.shuffle(chosen)
    rng.shuffle(rejected)
    total = n_chosen * n_rejected
    limit = total if cap is None else min(cap, total)
    pairs: list[tuple[int, int]] = []
    for d in range(n_rejected):
        for c in range(n_chosen):
            if len(pairs) == limit:
                return pairs
            pairs.append((chosen[c], rejected[(c + d) % n_rejected]))
    return pairs


def dpo_records(
    run: RunSamples,
    tally: Tally,
    *,
    max_pairs_per_problem: int | None = 4,
    seed: int = 0,
    dedupe: bool = True,
    include_unparsed: bool = False,
) -> Iterator[dict[str, Any]]:
    """Preference records: a correct sample (chosen) against an incorrect one (rejected).

    Pairs of one problem are drawn with ``random.Random(f"{seed}|{problem_id}")``, so a problem's
    pairs depend only on the seed and its own samples. Unparsed samples are rejected candidates only
    with ``include_unparsed``; ``error`` verdicts never take part.
    """
    rejected_status = {"incorrect", "unparsed"} if include_unparsed else {"incorrect"}
    for group in run.problems:
        verified = [(s, v) for s, v in group.samples if v is not None]
        tally.unverified += len(group.samples) - len(verified)
        chosen = [s for s, v in verified if v.status == "correct"]
        rejected = [(s, v) for s, v in verified if v.status in rejected_status]
        if not chosen or not rejected:
            if not verified:
                reason = "no_verified"
            elif not chosen:
                reason = "no_correct"
            else:
                reason = "no_rejected_unparsed" if include_unparsed else "no_rejected"
            tally.skipped_problems[reason] += 1
            continue
        if dedupe:
            chosen = _dedupe(chosen, tally)
            kept = {id(s) for s in _dedupe([s for s, _ in rejected], tally)}
            rejected = [(s, v) for s, v in rejected if id(s) in kept]
        status = {s.index: v.status for s, v in rejected}
        rng = random.Random(f"{seed}|{group.problem.id}")
        prompt = _messages(run.prompts.prompt(group.problem))
        for c, r in pick_pairs(len(chosen), len(rejected), max_pairs_per_problem, rng):
            good, bad = chosen[c], rejected[r][0]
            yield {
                "prompt": prompt,
                "chosen": _assistant(good.text),
                "rejected": _assistant(bad.text),
                "metadata": {
                    **run.base_metadata(group.problem.id),
                    "chosen_index": good.index,
                    "rejected_index": bad.index,
                    "rejected_status": status[bad.index],
                },
            }
