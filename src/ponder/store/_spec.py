"""A run's identity: everything that changes what the samples are (the rule: :mod:`ponder.store`)."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from ponder.records import SamplingParams

if TYPE_CHECKING:
    from ponder.backends import Backend
    from ponder.tasks import Task


_PARAMS_V0 = frozenset({"max_tokens", "min_p", "seed", "stop", "temperature", "top_k", "top_p"})
"""The sampling parameters of the first release: always part of the hashed spec."""

_DEFAULT_PARAMS = SamplingParams()


class RunSpec(BaseModel):
    """Backend identity + task spec (data, template, few-shot) + sampling parameters.

    Two requests with equal specs are the same run: asking for more samples extends it. The number of samples,
    the problem subset, and how the samples are drawn (batch, concurrency, processes) are not part of the
    identity; the full rule is in :mod:`ponder.store`.
    """

    model_config = ConfigDict(frozen=True)

    model: str
    task: dict[str, Any]
    params: SamplingParams

    def canonical(self) -> str:
        """The JSON text that is hashed into the run id (and stored with the run)."""
        data = self.model_dump(mode="json")
        defaults = _DEFAULT_PARAMS.model_dump(mode="json")
        # A sampling parameter added after the first release counts only when set away from its
        # default (which reproduces what earlier releases did), so existing runs keep their ids.
        data["params"] = {
            k: v for k, v in data["params"].items() if k in _PARAMS_V0 or v != defaults.get(k)
        }
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @property
    def run_id(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:12]

    @property
    def task_name(self) -> str:
        return str(self.task.get("name", "?"))


def request_seed(base: int, problem_id: str, first_index: int) -> int:
    """The seed of the request drawing samples ``first_index...`` of one problem.

    Derived, not random, so a resumed run asks for exactly what the interrupted one would have.
    """
    digest = hashlib.sha256(f"{base}|{problem_id}|{first_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def run_spec(backend: Backend, task: Task, params: SamplingParams) -> RunSpec:
    """The spec of sampling ``task`` from ``backend`` with ``params`` (the task spec records its verifier)."""
    return RunSpec(
        model=backend.identity, task={**task.spec(), "verifier": task.verifier}, params=params
    )
