"""The odds of one answer token over another, read from a completion's log-probabilities.

Both the ``judge`` scorer (Yes against No) and the ``reward_model`` scorer (its positive label
against its negative one) read a verdict this way: from the alternatives the backend returned at
the first generated position where either answer appears.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ponder.records import Completion


def answer_odds(
    completion: Completion, positive: Callable[[str], bool], negative: Callable[[str], bool]
) -> float | None:
    """P(positive) / (P(positive) + P(negative)) at the first position that offers either.

    Each side sums the probabilities of the alternatives it accepts (``" Yes"``, ``"yes"`` and
    ``"YES"`` are different tokens of one answer). Positions before it (a leading space or
    newline token, say) are skipped. None when the completion has no log-probabilities or no
    position offers either answer.
    """
    for position in completion.logprobs or ():
        # The chosen token is usually among the alternatives; counted once either way.
        offered = {alt.token: alt.logprob for alt in position.top}
        offered.setdefault(position.token, position.logprob)
        yes = sum(math.exp(lp) for token, lp in offered.items() if positive(token))
        no = sum(math.exp(lp) for token, lp in offered.items() if negative(token))
        if yes + no > 0:
            return yes / (yes + no)
    return None


def word_is(word: str) -> Callable[[str], bool]:
    """Whether a token is ``word`` up to case and surrounding whitespace."""
    wanted = word.strip().lower()
    return lambda token: token.strip().lower() == wanted
