"""Text toolkit: what several parts of Ponder read out of model output, implemented once.

* :func:`strip_think`: drop ``<think>`` reasoning (closed, stray closing, or unclosed blocks);
  :func:`split_think` returns the reasoning and the answer apart.
* :func:`parse_tool_calls`: tool calls a model wrote as text (Hermes tags, fenced or bare JSON),
  checked against the declared tools' schemas (:func:`schema_problem`).
* :func:`code_blocks`: the fenced code blocks (```` ``` ```` and ``~~~``, unterminated last one).
* :func:`extract_answer`: the final answer of a free-form solution (``#### 42``, ``\\boxed{...}``,
  "the answer is ...", or the last number), lightly normalised (:func:`normalize_answer`).
* :func:`tagged_answer`: the content of the last ``<answer>...</answer>`` (or another tag).
* :func:`question_markers`, :func:`stop_sequences`, :func:`cut_continuation`: recognise a made-up
  next problem written in the prompt's own format, stop generation there, and cut it off.

Plain string work only (no sympy, no code execution): cheap and safe anywhere.
"""

from ponder.text._answer import (
    DEFAULT_STRATEGIES,
    ExtractStrategy,
    check_strategies,
    extract_answer,
    normalize_answer,
)
from ponder.text._continuation import cut_continuation, question_markers, stop_sequences
from ponder.text._fence import CodeBlock, code_blocks
from ponder.text._tags import tagged_answer
from ponder.text._think import split_think, strip_think
from ponder.text._tools import parse_tool_calls, schema_problem

__all__ = [
    "DEFAULT_STRATEGIES",
    "CodeBlock",
    "ExtractStrategy",
    "check_strategies",
    "code_blocks",
    "cut_continuation",
    "extract_answer",
    "normalize_answer",
    "parse_tool_calls",
    "question_markers",
    "schema_problem",
    "split_think",
    "stop_sequences",
    "strip_think",
    "tagged_answer",
]
