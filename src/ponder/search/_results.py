"""What a search produces, as typed records: each trial on the dev split, the Pareto front, and the
final evaluation of the front (and the baselines) on the test split."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

TrialState = Literal["complete", "pruned", "infeasible", "failed", "running"]
"""``complete``: evaluated on every dev problem and within the constraints; ``pruned``: stopped
after a first slice of the dev split because its optimistic bound was dominated by the front;
``infeasible``: breaks a constraint (structural ones are never run); ``failed``: raised (a retry
of the same system follows when the search resumes); ``running``: in flight (or killed)."""

TestKind = Literal["system", "greedy", "vote"]


@dataclass(frozen=True)
class TrialResult:
    """One proposed system and how it did on the dev split.

    Attributes:
        number: Optuna's trial number (0-based, in order of creation).
        state: See :data:`TrialState`.
        params: The decisions that made the system (``generate.n``, ``layers[1].rank.use`` ...).
        config: The proposed system config (a valid ``ponder run`` config mapping).
        run_id: The system run on the dev split (``ponder show/report/trace`` work on it).
        problems: Dev problems it answered (fewer than the split when pruned).
        correct: How many of them were verified correct.
        accuracy: ``correct / problems`` (None when nothing was answered).
        tokens_per_query: Mean prompt + completion tokens per query, reused calls counted as if
            drawn (the cost of the system when deployed).
        calls_per_query: Mean model calls per query.
        calls: Model calls of the queries answered in this search (0 when the run was stored).
        reused_calls: How many of ``calls`` were served from stored generations.
        wall_s: Seconds the trial took in this search.
        note: Why a trial is pruned, infeasible or failed.
    """

    number: int
    state: TrialState
    params: dict[str, Any]
    config: dict[str, Any]
    run_id: str | None = None
    problems: int = 0
    correct: int = 0
    accuracy: float | None = None
    tokens_per_query: float | None = None
    calls_per_query: float | None = None
    calls: int = 0
    reused_calls: int = 0
    wall_s: float = 0.0
    note: str = ""


@dataclass(frozen=True)
class TestResult:
    """One system (a trial of the front, or a baseline) evaluated on the test split.

    Attributes:
        label: ``trial 7``, ``greedy``, ``vote@8``.
        kind: See :data:`TestKind`.
        trial: The trial number of a ``system`` row.
        run_id: Its run on the test split.
        problems: Test problems.
        correct: Verified correct.
        accuracy: ``correct / problems``.
        ci: A 95% percentile-bootstrap interval on the accuracy (resampling test problems).
        tokens_per_query: Mean prompt + completion tokens per query.
        calls_per_query: Mean model calls per query.
    """

    __test__: ClassVar[bool] = False  # not a pytest test class, despite its name

    label: str
    kind: TestKind
    trial: int | None
    run_id: str
    problems: int
    correct: int
    accuracy: float
    ci: tuple[float, float]
    tokens_per_query: float
    calls_per_query: float


@dataclass(frozen=True)
class SearchResult:
    """A search: its study, its trials on dev, the front, and the test evaluation.

    Attributes:
        study: The Optuna study name (a hash of space, task and split seed).
        storage: The study's SQLite file.
        algorithm: ``tpe``, ``nsga2``, ``random`` or ``grid``.
        space: The search space, as data.
        task: The task's spec.
        dev_ids, test_ids: The split (disjoint; the search sees only dev).
        trials: Every trial, in order.
        front: Trial numbers on the Pareto front (accuracy up, tokens per query down) among
            complete trials, by accuracy then tokens.
        tests: The test evaluation (empty when skipped).
        configs: Paths of the best systems written as config files, by trial number.
    """

    study: str
    storage: str
    algorithm: str
    space: dict[str, Any]
    task: dict[str, Any]
    dev_ids: list[str]
    test_ids: list[str]
    trials: list[TrialResult]
    front: list[int]
    tests: list[TestResult] = field(default_factory=list)
    configs: dict[int, str] = field(default_factory=dict)

    def trial(self, number: int) -> TrialResult:
        return next(t for t in self.trials if t.number == number)

    @property
    def calls(self) -> int:
        """Model calls the trials made in this search (reused ones included)."""
        return sum(t.calls for t in self.trials)

    @property
    def reused_calls(self) -> int:
        """Model calls served from stored generations instead of the model."""
        return sum(t.reused_calls for t in self.trials)
