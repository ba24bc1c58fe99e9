"""A sampling process for the tests of processes sharing a run: ``python -m tests._sampler_proc``.

Samples a jsonl task with a slow scripted backend into a database and prints the
:class:`~ponder.runs.SamplingReport` as JSON. Arguments: DB DATA N DELAY_S [HOLD_AFTER [GATE]]: with
HOLD_AFTER, every request after that many waits (its indices claimed) until the file GATE exists,
forever without GATE.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict
from pathlib import Path

from ponder.backends import ScriptedBackend
from ponder.records import Generation, Prompt, SamplingParams
from ponder.runs import sample_run
from ponder.store import Store
from ponder.tasks import JsonlTask


def main() -> None:
    db, data, n, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    task = JsonlTask(path=data)
    hold_after = int(sys.argv[5]) if len(sys.argv) > 5 else None
    gate = Path(sys.argv[6]) if len(sys.argv) > 6 else None
    backend = ScriptedBackend(choices=["#### 1", "#### 2", "#### 3"], delay_s=delay, batch=2)
    original = backend.generate
    requests = 0

    async def generate(prompt: Prompt, n: int, params: SamplingParams) -> Generation:
        nonlocal requests
        requests += 1
        if hold_after is not None and requests > hold_after:
            while gate is None or not gate.exists():
                await asyncio.sleep(0.05)
        return await original(prompt, n, params)

    backend.generate = generate  # type: ignore[method-assign]
    with Store(db) as store:
        report = asyncio.run(
            sample_run(
                store,
                backend,
                task,
                task.problems(),
                n,
                SamplingParams(max_tokens=8, seed=5),
                concurrency=1,
                poll_s=0.1,
            )
        )
    print(json.dumps(asdict(report)), flush=True)


if __name__ == "__main__":
    main()
