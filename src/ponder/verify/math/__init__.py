"""Math answer checking: extract the final answer from a solution, compare it with the reference.

* :func:`extract_answer`: the final answer of a free-form solution (``#### 42``, ``\\boxed{...}``,
  "the answer is ...", or the last number), lightly normalised; it lives in :mod:`ponder.text`
  and is re-exported here.
* :func:`is_equivalent`: exact comparison of plain numbers, symbolic (math-verify) otherwise.
* :class:`MathVerifier`: both, for many samples, in worker processes with a per-check time limit.
"""

from ponder.text import DEFAULT_STRATEGIES, ExtractStrategy, extract_answer
from ponder.verify.math._equiv import is_equivalent
from ponder.verify.math._verifier import MathVerifier

__all__ = [
    "DEFAULT_STRATEGIES",
    "ExtractStrategy",
    "MathVerifier",
    "extract_answer",
    "is_equivalent",
]
