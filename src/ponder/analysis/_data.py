"""A run's samples and verdicts as arrays, the input of every analysis."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ponder.analysis._tally import run_verifier
from ponder.errors import UserError
from ponder.store import RunSpec, Store


@dataclass(frozen=True)
class ProblemSamples:
    """One problem's verified samples, in sample-index order."""

    problem_id: str
    reference: str | None
    correct: NDArray[np.bool_]
    """Verdict == correct, per sample."""
    answers: list[str | None]
    """Extracted answers (None when unparsed), per sample; used by voting."""
    scores: NDArray[np.float64]
    """A per-sample score for best-of-k (NaN where none): verifier score, else mean token logprob."""
    completion_tokens: NDArray[np.int64]
    prompt_tokens: NDArray[np.int64]
    latency_s: NDArray[np.float64]
    texts: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.correct.shape[0])

    @property
    def c(self) -> int:
        return int(self.correct.sum())

    @property
    def first_correct(self) -> int | None:
        """Position of the first correct sample (None if none is correct)."""
        return int(np.argmax(self.correct)) if self.correct.any() else None


@dataclass(frozen=True)
class RunData:
    """All verified samples of one run, per problem, plus what identifies the run."""

    run_id: str
    spec: RunSpec
    verifier: str
    problems: list[ProblemSamples]

    @property
    def task(self) -> str:
        return self.spec.task_name

    @property
    def label(self) -> str:
        """A short name for legends: model and run id."""
        model = self.spec.model.split(":", 1)[-1].split("@", 1)[0]
        return f"{model} ({self.run_id[:6]})"

    def n_per_problem(self) -> NDArray[np.int64]:
        return np.array([p.n for p in self.problems], dtype=np.int64)

    def c_per_problem(self) -> NDArray[np.int64]:
        return np.array([p.c for p in self.problems], dtype=np.int64)


ScoreSource = Literal["auto", "logprob", "verifier"]
"""Where a sample's score (what best-of-k and weighted vote rank by) comes from."""


def load_run(
    store: Store, run_ref: str, verifier: str | None = None, *, scores: ScoreSource = "auto"
) -> RunData:
    """Load a run's verified samples. Samples without a verdict from ``verifier`` are left out.

    ``verifier`` defaults to the run's verifier (see :func:`run_verifier`).

    ``scores`` chooses each sample's score, what best-of-k and the weighted vote rank by: ``"auto"``
    (the default) and ``"logprob"`` the mean token log-probability, the model's own confidence;
    ``"verifier"`` the verifier's score. A run's verifier scores against the problem's reference
    (the gym scorers' partial credit, for example), so ranking by it is an oracle: an upper bound
    next to coverage, not a selector a deployed system could use; it is never chosen by default.
    A sample without the chosen score gets NaN.

    Raises:
        UserError: the run has no verdicts (yet), or none from ``verifier``.
    """
    info = store.get_run(run_ref)
    name = run_verifier(store, info.id, verifier)
    by_problem: dict[str, list[tuple[Any, ...]]] = {}
    for row in store.verified_rows(info.id, name):
        by_problem.setdefault(row[0], []).append(row)
    problems = []
    for p in store.problems(info.id):
        rows = by_problem.get(p.id, [])
        # Columns as in Store.verified_rows; rows come ordered by sample index.
        cols = list(zip(*rows, strict=True)) if rows else [()] * 10
        _, _, status, extracted, score, logprob, ctok, ptok, latency, text = cols
        if scores in ("auto", "logprob"):
            chosen: Any = logprob
        elif scores == "verifier":
            chosen = score
        else:
            raise UserError(
                f"unknown score source {scores!r}", hint="choose auto, logprob or verifier"
            )
        sample_scores = np.array([np.nan if v is None else v for v in chosen], dtype=np.float64)
        problems.append(
            ProblemSamples(
                problem_id=p.id,
                reference=p.reference,
                correct=np.array([st == "correct" for st in status], dtype=np.bool_),
                answers=list(extracted),
                scores=sample_scores,
                completion_tokens=np.array(ctok, dtype=np.int64),
                prompt_tokens=np.array(ptok, dtype=np.int64),
                latency_s=np.array(latency, dtype=np.float64),
                texts=list(text),
            )
        )
    return RunData(run_id=info.id, spec=info.spec, verifier=name, problems=problems)
