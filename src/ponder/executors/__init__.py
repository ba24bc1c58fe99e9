"""Executors: where a run's work happens (``--executor``).

* ``local`` — this process (the default);
* ``ray`` — actors and tasks of a Ray cluster (``pip install 'ponder[ray]'``), see
  :class:`RayConfig`.

An executor hands the drivers backends and verifiers (:class:`Executor`); the drivers send the
same requests through them and alone write the store, so a run is the same run, with the same
samples, on any executor. More executors come from plugins (the ``ponder.executors`` entry-point
group), registered with :func:`register_executor`.
"""

from ponder._registry import register_lazy
from ponder.executors._base import (
    Executor,
    create_executor,
    executor_config_type,
    executor_kinds,
    register_executor,
)
from ponder.executors._local import LocalConfig, LocalExecutor

# Ray is optional and slow to import: its executor loads when asked for.
register_lazy("executor", "ray", "ponder.executors._ray")

__all__ = [
    "Executor",
    "LocalConfig",
    "LocalExecutor",
    "create_executor",
    "executor_config_type",
    "executor_kinds",
    "register_executor",
]
