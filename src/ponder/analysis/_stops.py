"""Where adaptive sampling stopped each problem, beside majority vote over every stored sample.

For each schedule (stop rule, round size, maximum) that stopped problems of a run
(:meth:`ponder.store.Store.stops`), :func:`stops_sections` reports on those problems: samples used
per problem (mean, min, max), completion tokens used, how the problems stopped, and the accuracy of
the vote at the stop; and beside it, on the same problems, majority vote over all the samples the
run holds and their completion tokens. A run sampled adaptively and later filled up to a fixed N
with the same spec is therefore a side-by-side comparison in one run.

A vote is correct when a sample that voted for its answer was judged correct (the verdicts of the
report's verifier); a problem whose samples have no answer has an incorrect vote.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ponder.adaptive import answer_key, leading_answer
from ponder.analysis._data import RunData
from ponder.store import AdaptiveStop, Store


def vote_correct(
    answers: Sequence[str | None], correct: Sequence[bool], answer: str | None
) -> bool:
    """Whether ``answer`` (a vote's answer) is correct: a sample among ``answers`` (extracted
    answers) that voted for it has a correct verdict (``correct``, aligned with ``answers``)."""
    key = answer_key(answer)
    if key is None:
        return False
    return any(bool(c) for a, c in zip(answers, correct, strict=True) if answer_key(a) == key)


@dataclass(frozen=True)
class Usage:
    """Samples and completion tokens per problem, and the accuracy of the vote, on some problems."""

    problems: int
    mean_samples: float
    min_samples: int
    max_samples: int
    completion_tokens: int
    vote_accuracy: float
    """Share of the problems whose vote is correct."""


@dataclass(frozen=True)
class StopsSection:
    """One schedule's stops in one run, beside majority vote over all stored samples."""

    run_id: str
    rule: str
    reasons: dict[str, int]
    adaptive: Usage
    all_samples: Usage
    """Majority vote over every verified sample of the same problems."""
    unverified: int = 0
    """Stopped problems left out: the report's verifier has no verdicts for their samples."""
    notes: list[str] = field(default_factory=list)


def _usage(counts: list[int], tokens: list[int], correct: list[bool]) -> Usage:
    n = len(counts)
    return Usage(
        problems=n,
        mean_samples=sum(counts) / n if n else float("nan"),
        min_samples=min(counts, default=0),
        max_samples=max(counts, default=0),
        completion_tokens=sum(tokens),
        vote_accuracy=sum(correct) / n if n else float("nan"),
    )


def stops_section(data: RunData, rule: str, stops: Sequence[AdaptiveStop]) -> StopsSection:
    """The section of one schedule: its ``stops`` judged with ``data``'s verdicts."""
    by_id = {p.problem_id: p for p in data.problems}
    used: list[int] = []
    used_tokens: list[int] = []
    used_correct: list[bool] = []
    full: list[int] = []
    full_tokens: list[int] = []
    full_correct: list[bool] = []
    missing = 0
    for stop in stops:
        p = by_id.get(stop.problem_id)
        if p is None or p.n < stop.samples:
            missing += 1
            continue
        head = p.answers[: stop.samples]
        used.append(stop.samples)
        used_tokens.append(int(p.completion_tokens[: stop.samples].sum()))
        used_correct.append(vote_correct(head, list(p.correct[: stop.samples]), stop.answer))
        top, _ = leading_answer(p.answers)
        full.append(p.n)
        full_tokens.append(int(p.completion_tokens.sum()))
        full_correct.append(vote_correct(p.answers, list(p.correct), top))
    notes = []
    if missing:
        notes.append(
            f"{missing} stopped problem(s) lack verdicts of {data.verifier} for the samples their "
            f"stop covers and are left out (verify them: ponder verify {data.run_id})"
        )
    return StopsSection(
        run_id=data.run_id,
        rule=rule,
        reasons=dict(Counter(s.reason for s in stops)),
        adaptive=_usage(used, used_tokens, used_correct),
        all_samples=_usage(full, full_tokens, full_correct),
        unverified=missing,
        notes=notes,
    )


def stops_sections(store: Store, data: RunData) -> list[StopsSection]:
    """One section per schedule that stopped problems of ``data``'s run (none: an empty list)."""
    by_rule: dict[str, list[AdaptiveStop]] = {}
    for stop in store.stops(data.run_id):
        by_rule.setdefault(stop.rule, []).append(stop)
    return [stops_section(data, rule, stops) for rule, stops in by_rule.items()]


def _num(x: float) -> float | None:
    return None if x != x else float(x)


def _usage_json(u: Usage) -> dict[str, Any]:
    return {
        "problems": u.problems,
        "mean_samples": _num(u.mean_samples),
        "min_samples": u.min_samples,
        "max_samples": u.max_samples,
        "completion_tokens": u.completion_tokens,
        "vote_accuracy": _num(u.vote_accuracy),
    }


def stops_json(sections: Sequence[StopsSection]) -> list[dict[str, Any]]:
    """The sections as JSON data (undefined values are null)."""
    return [
        {
            "rule": s.rule,
            "reasons": s.reasons,
            "adaptive": _usage_json(s.adaptive),
            "all_samples": _usage_json(s.all_samples),
            "unverified": s.unverified,
            "notes": s.notes,
        }
        for s in sections
    ]


def _f(x: float, digits: int = 3) -> str:
    return "–" if x != x else f"{x:.{digits}f}"


def stops_rows(section: StopsSection) -> list[tuple[str, ...]]:
    """Table rows (what, problems, mean/min/max samples, completion tokens, vote accuracy): the
    stops of the schedule, then majority vote over all stored samples of the same problems."""
    rows: list[tuple[str, ...]] = []
    for label, u in (
        ("adaptive stop", section.adaptive),
        ("all stored samples", section.all_samples),
    ):
        rows.append(
            (
                label,
                str(u.problems),
                _f(u.mean_samples, 2),
                str(u.min_samples),
                str(u.max_samples),
                f"{u.completion_tokens:,}",
                _f(u.vote_accuracy),
            )
        )
    return rows


STOPS_COLUMNS = (
    "vote",
    "problems",
    "mean samples",
    "min",
    "max",
    "completion tokens",
    "vote accuracy",
)


def reasons_text(section: StopsSection) -> str:
    """``rule 5, max 2``: how many problems stopped for each reason."""
    return ", ".join(f"{k} {v}" for k, v in sorted(section.reasons.items()))


def stops_html(sections: Sequence[StopsSection]) -> str:
    """The HTML of the sections (an empty string when there are none)."""
    if not sections:
        return ""
    parts = [
        "<h2>Adaptive stops</h2><p>Where adaptive sampling (<code>ponder sample --adaptive</code>) "
        "stopped each problem, beside majority vote over every sample the run holds for the same "
        "problems. A vote is correct when a sample that voted for its answer is correct.</p>"
    ]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in STOPS_COLUMNS)
    for s in sections:
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
            for row in stops_rows(s)
        )
        notes = "".join(f"<p class=note>{html.escape(n)}</p>" for n in s.notes)
        parts.append(
            f"<h3>{html.escape(s.run_id[:12])}: <code>{html.escape(s.rule)}</code></h3>"
            f"<p>stopped by {html.escape(reasons_text(s))}</p>"
            f"<table><tr>{head}</tr>{body}</table>{notes}"
        )
    return "".join(parts)
