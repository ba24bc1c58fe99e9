"""Search over inference-time systems (issue 15, in progress): the search space as data.

* :class:`SearchSpace`: which models generate, which optional layers may follow and their knobs, and
  the constraints (``SearchSpace.load(path)``, errors name the field).
* :func:`propose`: the system config a :class:`Suggester` (an Optuna trial, :class:`RandomSuggester`,
  or the exhaustive :func:`grid`) chooses from a space, as a :class:`Proposal`.
* :class:`TrialSuggester`, :func:`make_sampler`: Optuna (TPE, NSGA-II, random, grid) behind that protocol.
"""

from ponder.search._identity import check_same_space, differences, study_name
from ponder.search._optuna import ALGORITHMS, Algorithm, TrialSuggester, make_sampler
from ponder.search._space import (
    Constraints,
    GenerateSpace,
    Knob,
    LayerSpace,
    Proposal,
    RandomSuggester,
    Range,
    SearchSpace,
    Suggester,
    grid,
    propose,
)

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "Constraints",
    "GenerateSpace",
    "Knob",
    "LayerSpace",
    "Proposal",
    "RandomSuggester",
    "Range",
    "SearchSpace",
    "Suggester",
    "TrialSuggester",
    "check_same_space",
    "differences",
    "grid",
    "make_sampler",
    "propose",
    "study_name",
]
