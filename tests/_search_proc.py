"""A search in its own process (killed and resumed by tests/test_search_study.py).

Usage: python _search_proc.py DATA DB. Grid search over 4 systems of a slow scripted model, one
line per finished trial on stdout, heartbeat 1 s / grace 2 s.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ponder.search import search
from ponder.tasks import get_task
from test_search_study import SPACE, make_backends


def main() -> None:
    data, db = sys.argv[1], sys.argv[2]
    space = {**SPACE, "generate": {**SPACE["generate"], "models": ["sharp"], "n": [1, 2]}}
    search(
        space,
        get_task("jsonl", path=data),
        store=db,
        backends=make_backends(delay_s=0.3),
        algorithm="grid",
        trials=4,
        dev=4,
        test=0,
        prune=False,
        concurrency=1,
        heartbeat_s=1,
        grace_s=2,
        on_trial=lambda t: print(f"trial {t.number} {t.state}", flush=True),
    )


if __name__ == "__main__":
    main()
