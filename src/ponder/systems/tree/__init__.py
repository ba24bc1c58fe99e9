"""Tree search over reasoning steps: steps, process scorers, and what strategies share.

The strategies are system components (``beam_search``, ``dvts``, ``mcts``, ``particles`` in
:mod:`ponder.systems.components`); this package holds what they are built on:

* :class:`StepsConfig` and :func:`next_steps`: a solution as steps; one request grows a partial
  solution by one step (a partial assistant turn continued, stopping at the step delimiter);
* process scorers (:class:`Scorer`, registry kind ``scorer``): ``judge`` (an LLM's verdict on a
  partial solution), ``python`` (your function), ``outcome`` (model-written unit tests at the
  leaves), ``reward_model`` (a reward model behind an OpenAI-compatible server); step scores make
  a path score by :func:`aggregate`;
* the search tree itself (:class:`~ponder.systems.SearchTree`) is stored with the trace.
"""

from ponder._registry import register_lazy
from ponder.systems.tree._scorers import (
    AggregateRule,
    ScoreCache,
    ScoreInput,
    Scorer,
    aggregate,
    config_name,
    make_scorer,
    register_scorer,
    scorer_config,
    scorer_kinds,
)
from ponder.systems.tree._steps import (
    DEFAULT_FINAL,
    Step,
    StepsConfig,
    next_steps,
    step_prompt,
    to_step,
)

# The built-in scorers load on first use (listing the kinds does not import them).
for _kind, _module in (
    ("judge", "_judge"),
    ("python", "_python"),
    ("outcome", "_outcome"),
    ("reward_model", "_reward"),
):
    register_lazy("scorer", _kind, f"ponder.systems.tree.{_module}")

__all__ = [
    "DEFAULT_FINAL",
    "AggregateRule",
    "ScoreCache",
    "ScoreInput",
    "Scorer",
    "Step",
    "StepsConfig",
    "aggregate",
    "config_name",
    "make_scorer",
    "next_steps",
    "register_scorer",
    "scorer_config",
    "scorer_kinds",
    "step_prompt",
    "to_step",
]
