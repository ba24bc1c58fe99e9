"""Adaptive compute: draw samples in rounds and stop a problem once its vote is decided.

Stop rules (registered under the plugin kind ``stop_rule``; every parameter has a default, and
every rule has ``min_samples``, default 4, before which it never stops):

* ``fixed``: never stops early (today's fixed-N sampling).
* ``margin`` (``votes=4``): the leading answer has ``votes`` more votes than the runner-up.
* ``supermajority`` (``share=0.75``): the leading answer holds ``share`` of the samples drawn.
* ``beta`` (``confidence=0.95``): Adaptive-Consistency's rule,
  ``P(p > 1/2) >= confidence`` for ``p ~ Beta(leader + 1, runner_up + 1)``.
* ``dirichlet`` (``confidence=0.95, classes=4, draws=2000, seed=0``): the posterior probability,
  under ``Dirichlet(counts + 1)`` over the ``classes`` largest answers, that the leader is the most
  likely answer reaches ``confidence`` (seeded Monte Carlo, memoised per count vector).
* ``window`` (``size=4``): the last ``size`` answers are the same.

Rules work on extracted answers (:func:`answer_key`): samples without an answer never vote. A
:class:`Schedule` asks its rule at the end of each round of ``round_size`` samples (default 4) and
at the maximum; :meth:`Schedule.replay` turns a problem's answers into a :class:`Decision`.
"""

from ponder.adaptive._posterior import (
    beta_leader_prob,
    dirichlet_leader_prob,
    dirichlet_leader_prob_one,
)
from ponder.adaptive._rules import (
    BetaRule,
    DirichletRule,
    FixedN,
    Margin,
    StopReason,
    StopRule,
    Supermajority,
    Window,
    make_stop_rule,
    register_stop_rule,
    stop_rule_class,
    stop_rule_names,
)
from ponder.adaptive._schedule import DEFAULT_ROUND, Decision, Schedule
from ponder.adaptive._votes import TOP, Votes, answer_key, leading_answer, votes_of

__all__ = [
    "DEFAULT_ROUND",
    "TOP",
    "BetaRule",
    "Decision",
    "DirichletRule",
    "FixedN",
    "Margin",
    "Schedule",
    "StopReason",
    "StopRule",
    "Supermajority",
    "Votes",
    "Window",
    "answer_key",
    "beta_leader_prob",
    "dirichlet_leader_prob",
    "dirichlet_leader_prob_one",
    "leading_answer",
    "make_stop_rule",
    "register_stop_rule",
    "stop_rule_class",
    "stop_rule_names",
    "votes_of",
]
