"""A run's samples and verdicts as arrays, the input of every analysis."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from ponder.errors import UserError
from ponder.sampling import RunSpec, Store


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


def load_run(store: Store, run_ref: str, verifier: str | None = None) -> RunData:
    """Load a run's verified samples. Samples without a verdict from ``verifier`` are left out.

    Raises:
        UserError: the run has no verdicts (yet), or none from ``verifier``.
    """
    info = store.get_run(run_ref)
    found = store.verifiers(info.id)
    if not found:
        raise UserError(
            f"run {info.id} has no verdicts yet", hint=f"verify it first: ponder verify {info.id}"
        )
    name = verifier or found[0]
    if name not in found:
        raise UserError(
            f"run {info.id} has no verdicts from verifier {name!r} (it has: {', '.join(found)})",
            hint=f"run: ponder verify {info.id}",
        )
    verdicts = store.verdicts(info.id, name)
    by_problem: dict[str, list] = {}
    for s in store.samples(info.id):
        v = verdicts.get(s.id or -1)
        if v is not None:
            by_problem.setdefault(s.problem_id, []).append((s, v))
    problems = []
    for p in store.problems(info.id):
        items = sorted(by_problem.get(p.id, []), key=lambda sv: sv[0].index)
        problems.append(
            ProblemSamples(
                problem_id=p.id,
                reference=p.reference,
                correct=np.array([v.status == "correct" for _, v in items], dtype=np.bool_),
                answers=[v.extracted for _, v in items],
                scores=np.array(
                    [
                        v.score
                        if v.score is not None
                        else (s.mean_logprob if s.mean_logprob is not None else np.nan)
                        for s, v in items
                    ],
                    dtype=np.float64,
                ),
                completion_tokens=np.array([s.completion_tokens for s, _ in items], dtype=np.int64),
                prompt_tokens=np.array([s.prompt_tokens for s, _ in items], dtype=np.int64),
                latency_s=np.array([s.latency_s for s, _ in items], dtype=np.float64),
                texts=[s.text for s, _ in items],
            )
        )
    return RunData(run_id=info.id, spec=info.spec, verifier=name, problems=problems)
