"""bench/scale.py runs end to end (tiny sizes) and its JSON accounts for every request it timed.

No timing is asserted (the machine may be busy): only that every configuration drew what it was given, that the
ratios and the targets' verdicts follow from the numbers reported, and that stdout is one JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_bench_scale_reports_every_configuration_consistently() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    args = ["--problems", "12", "--reps", "2", "--latency", "0.05", "--seconds", "0.2"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale.py"), "--json", "--no-replicas", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)

    over = result["overhead"]
    for label, slots, concurrency in [
        ("local", 1, 1),
        ("ray_1_actor", 1, 1),
        ("ray_default", 1, 1),  # one node here: one actor
        ("local_c4", 1, 4),
        ("ray_4_actors_c4", 4, 4),
    ]:
        row = over[label]
        assert (row["request_slots"], row["concurrency"]) == (slots, concurrency), label
        assert row["requests"] == 12 and len(row["wall_s"]) == 2, label
    ray_walls, local_walls = over["ray_1_actor"]["wall_s"], over["local"]["wall_s"]
    paired = [(r - loc) / 12 for r, loc in zip(ray_walls, local_walls, strict=True)]
    # The median of two pairs is their mean.
    assert over["ray_added_ms_per_request"] == pytest.approx(1000 * sum(paired) / 2, abs=0.02)
    assert over["ray_added_ms_per_sample"] == pytest.approx(
        over["ray_added_ms_per_request"] / 16, abs=1e-3
    )

    tp = result["throughput"]
    per_actor = 4  # --seconds / --latency
    for k in (1, 2, 4):
        assert tp[f"ray_{k}"]["requests"] == per_actor * k
        assert tp[f"ray_{k}"]["request_slots"] == k == tp[f"ray_{k}"]["concurrency"]
    assert tp["local_4"]["requests"] == per_actor * 4 and tp["local_4"]["concurrency"] == 4
    rate = {k: tp[f"ray_{k}"]["requests_per_s"] for k in (1, 2, 4)}
    assert tp["four_over_one"] == pytest.approx(rate[4] / rate[1], abs=1e-3)
    assert tp["ray4_over_local4"] == pytest.approx(
        rate[4] / tp["local_4"]["requests_per_s"], abs=1e-3
    )

    targets, met = result["targets"], result["targets_met"]
    assert met["ray_added_ms_per_request"] == (
        over["ray_added_ms_per_request"] < targets["ray_added_ms_per_request"]
    )
    for key in ("two_over_one", "four_over_one", "ray4_over_local4"):
        assert met[key] == (tp[key] >= targets[key])
    model = result["model_check"]["rows"]["ray_4"]
    assert model["measured_requests_per_s"] == rate[4]
    assert result["replicas"] is None
