"""Optuna behind the :class:`~ponder.search.Suggester` protocol: a trial answers a space's decisions.

Parameter names are the space's decision names (``generate.n``, ``layers[1].rank.top_k``), stable
across trials, and a left-out layer asks nothing about its knobs, so Optuna sees a conditional
(define-by-run) space; TPE handles it with ``multivariate=True, group=True``. The exhaustive grid is
run by enqueueing every :func:`~ponder.search.grid` proposal's decisions, so it goes through the same
study (storage, resume) as the other algorithms.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

from ponder.errors import ConfigError
from ponder.search._space import Range

if TYPE_CHECKING:
    import optuna

Algorithm = Literal["tpe", "nsga2", "random", "grid"]
ALGORITHMS: tuple[Algorithm, ...] = get_args(Algorithm)


class TrialSuggester:
    """Answers decisions with ``trial.suggest_*``."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def choose(self, name: str, choices: Sequence[Any]) -> Any:
        return self.trial.suggest_categorical(name, list(choices))

    def number(self, name: str, knob: Range) -> float | int:
        if knob.integer:
            step = int(knob.step or 1)
            return self.trial.suggest_int(
                name, int(knob.low), int(knob.high), step=step, log=knob.log
            )
        return self.trial.suggest_float(
            name, float(knob.low), float(knob.high), step=knob.step, log=knob.log
        )


def make_sampler(
    algorithm: str,
    seed: int,
    *,
    trials: int | None = None,
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of ``algorithm`` (``grid`` samples what is enqueued, in order).

    Args:
        trials: The search's trial budget. Small budgets get fewer random start-up trials for TPE
            (a third of the budget, 4 to 10) and a smaller NSGA-II population (a third, 4 to 50),
            so the model-based part gets trials to work with.

    Constraints reach TPE and NSGA-II as each trial's ``Trial.set_constraint`` values (> 0:
    infeasible), so both prefer feasible systems.

    Raises:
        ConfigError: an unknown algorithm (the message lists them).
    """
    import optuna

    if algorithm == "tpe":
        with warnings.catch_warnings():
            # multivariate/group are marked experimental; they are what conditional spaces need.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed,
                multivariate=True,
                group=True,
                n_startup_trials=10 if trials is None else min(10, max(4, trials // 3)),
            )
    if algorithm == "nsga2":
        population = 50 if trials is None else min(50, max(4, trials // 3))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    if algorithm in ("random", "grid"):
        # grid: every proposal is enqueued, so the sampler only fills what the queue leaves open.
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(
        f"unknown search algorithm {algorithm!r}", hint=f"choose one of: {', '.join(ALGORITHMS)}"
    )
