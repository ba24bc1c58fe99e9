"""Scoring reasoning-gym problems with each dataset's own scorer (the ``gym`` verifier).

reasoning-gym is an optional dependency (``pip install "ponder[gym]"``); nothing here imports it
until a dataset is built or a sample scored, and a missing install is a
:class:`~ponder.errors.UserError` whose hint is the install command (:data:`GYM_INSTALL`).

* :class:`GymVerifier`: the answer between ``<answer>`` tags (:func:`ponder.text.tagged_answer`),
  scored by the dataset that generated the problem; the score is kept, the full score is correct.
  Scorers run in a sandboxed worker process with a time limit per score (:data:`DEFAULT_TIMEOUT_S`).

Safety: some scorers evaluate the answer text as Python (``eval`` in ``string_insertion``,
``spiral_matrix``, ``binary_matrix`` and ``n_queens``; sympy's ``parse_expr``, which uses ``eval``,
in ``countdown``, ``puzzle24``, ``polynomial_multiplication`` and the integration datasets). That
is model-written code, so the worker runs inside the code sandbox (:mod:`ponder.verify.code`:
bubblewrap where available, else its weaker fallback), and a hang or a crash costs one ``error``
verdict and a new worker.
* :class:`GymReference`: what a gym problem stores as its reference (dataset, options, index,
  answer, library version); the verifier regenerates the entry from it.
* :func:`make_dataset`, :func:`canonical_options`, :func:`dataset_options`, :func:`gym_datasets`,
  :func:`gym_version`: build datasets from Ponder's options, checked by each dataset's own config.
"""

from ponder.verify.gym._library import (
    COMPOSITE,
    DEFAULT_SEED,
    DEFAULT_SIZE,
    GYM_DISTRIBUTION,
    GYM_INSTALL,
    GYM_VERSION,
    canonical_options,
    dataset_config,
    dataset_options,
    dataset_summary,
    gym_datasets,
    gym_version,
    import_gym,
    make_dataset,
)
from ponder.verify.gym._reference import (
    ANSWER_TAG,
    DEFAULT_EXTRACT,
    GymExtract,
    GymReference,
    check_extract,
    find_answer,
)
from ponder.verify.gym._verifier import DEFAULT_TIMEOUT_S, GymVerifier

__all__ = [
    "ANSWER_TAG",
    "COMPOSITE",
    "DEFAULT_EXTRACT",
    "DEFAULT_SEED",
    "DEFAULT_SIZE",
    "DEFAULT_TIMEOUT_S",
    "GYM_DISTRIBUTION",
    "GYM_INSTALL",
    "GYM_VERSION",
    "GymExtract",
    "GymReference",
    "GymVerifier",
    "canonical_options",
    "check_extract",
    "dataset_config",
    "dataset_options",
    "dataset_summary",
    "find_answer",
    "gym_datasets",
    "gym_version",
    "import_gym",
    "make_dataset",
]
