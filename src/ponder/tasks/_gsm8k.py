"""The ``gsm8k`` task: the 1,319 grade-school word problems of the GSM8K test split."""

from __future__ import annotations

from dataclasses import dataclass, field

from ponder.errors import DataError
from ponder.records import Problem
from ponder.tasks._base import (
    DATASET_INSTALL,
    DATASET_PACKAGE,
    MathTask,
    read_package_data,
    sha256_hex,
)
from ponder.tasks._jsonl import iter_jsonl
from ponder.tasks._registry import register_task

GSM8K_FILE = "data/gsm8k/test.jsonl"
"""The test split inside the data package."""


def gsm8k_reference(solution: str) -> str | None:
    """The final answer of a GSM8K worked solution: the number after ``####``, commas removed."""
    if "####" not in solution:
        return None
    answer = solution.rsplit("####", 1)[1].strip().replace(",", "")
    return answer or None


@register_task("gsm8k")
@dataclass(kw_only=True)
class Gsm8kTask(MathTask):
    """GSM8K (test split). Ids are ``gsm8k/<line index>``; the reference is the final number."""

    name: str = field(default="gsm8k", init=False)

    def _load(self) -> tuple[list[Problem], dict[str, object]]:
        data = read_package_data(GSM8K_FILE)
        source = f"{DATASET_PACKAGE}:{GSM8K_FILE}"
        problems: list[Problem] = []
        for lineno, record in iter_jsonl(data, source):
            question, solution = record.get("question"), record.get("answer")
            reference = gsm8k_reference(solution) if isinstance(solution, str) else None
            if not isinstance(question, str) or not isinstance(solution, str) or reference is None:
                raise DataError(
                    f"{source}:{lineno}: expected a question and an answer ending in '#### N'",
                    hint=f"reinstall the data package: {DATASET_INSTALL} --force-reinstall",
                )
            problems.append(
                Problem(
                    id=f"gsm8k/{lineno - 1}",
                    question=question,
                    reference=reference,
                    metadata={"solution": solution},
                )
            )
        source_spec: dict[str, object] = {
            "kind": "package",
            "package": DATASET_PACKAGE,
            "files": [{"path": GSM8K_FILE, "sha256": sha256_hex(data)}],
        }
        return problems, source_spec
