"""Search over inference-time systems: :func:`search` proposes systems from a space, scores them on
a dev split (an Optuna study, resumable), and evaluates the Pareto front on a test split.

* :class:`SearchSpace`: which models generate, which optional layers may follow and their knobs, and
  the constraints (``SearchSpace.load(path)``, errors name the field).
* :func:`propose`: the system config a :class:`Suggester` (an Optuna trial, :class:`RandomSuggester`,
  or the exhaustive :func:`grid`) chooses from a space, as a :class:`Proposal`.
* :class:`TrialSuggester`, :func:`make_sampler`: Optuna (TPE, NSGA-II, random, grid) behind that protocol.
* :func:`split_problems`, :func:`front`, :func:`evaluate_on_test`: the seeded dev/test split, the Pareto
  front, and the test evaluation of the front and the baselines with bootstrap intervals.
* :func:`trials_table`, :func:`test_table`, :func:`render_search_html`, :func:`write_configs`,
  :func:`result_json`: a search's tables, HTML page, config files and JSON.
"""

from ponder.search._evaluate import (
    SystemEntry,
    bootstrap_ci,
    check_isolation,
    evaluate_on_test,
    front,
    top_of_front,
    vote_config,
    vote_samples,
)
from ponder.search._identity import check_same_space, differences, study_name
from ponder.search._optuna import ALGORITHMS, Algorithm, TrialSuggester, make_sampler
from ponder.search._report import (
    TRIAL_COLUMNS,
    config_yaml,
    decisions,
    new_trials_table,
    render_search_html,
    result_json,
    test_table,
    trial_row,
    trials_table,
    write_configs,
)
from ponder.search._results import SearchResult, TestKind, TestResult, TrialResult, TrialState
from ponder.search._search import search
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
from ponder.search._split import split_problems
from ponder.search._study import SearchSettings, Study, open_study, storage_path

__all__ = [
    "ALGORITHMS",
    "TRIAL_COLUMNS",
    "Algorithm",
    "Constraints",
    "GenerateSpace",
    "Knob",
    "LayerSpace",
    "Proposal",
    "RandomSuggester",
    "Range",
    "SearchResult",
    "SearchSettings",
    "SearchSpace",
    "Study",
    "Suggester",
    "SystemEntry",
    "TestKind",
    "TestResult",
    "TrialResult",
    "TrialState",
    "TrialSuggester",
    "bootstrap_ci",
    "check_isolation",
    "check_same_space",
    "config_yaml",
    "decisions",
    "differences",
    "evaluate_on_test",
    "front",
    "grid",
    "make_sampler",
    "new_trials_table",
    "open_study",
    "propose",
    "render_search_html",
    "result_json",
    "search",
    "split_problems",
    "storage_path",
    "study_name",
    "test_table",
    "top_of_front",
    "trial_row",
    "trials_table",
    "vote_config",
    "vote_samples",
    "write_configs",
]
