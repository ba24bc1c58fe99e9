"""Each script under experiments/ runs end to end in a tiny configuration, so none of them can rot.

The real scripts, as subprocesses, on the real embedded model (2 problems x 2 samples, short generations, a
reasoning-gym task), each writing its markdown table (and HTML report) into a temporary results folder. The
long configurations are documented in docs/results.md and not run here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("reasoning_gym")

ROOT = Path(__file__).resolve().parents[1]
TASK = ["--task", "gym:chain_sum", "-T", "size=4"]
# One thread: on a shared, loaded CI box llama.cpp's spinning threads slow each other down ~10x.
TINY = ["--problems", "2", "--n", "2", "--max-tokens", "32", "--threads", "1"]
FAST = ["--bootstrap", "20", "--subsets", "5"]

pytestmark = [pytest.mark.embedded, pytest.mark.slow]


def experiment(name: str, tmp_path: Path, *args: str) -> tuple[str, str]:
    """Run ``experiments/NAME.py`` with a temporary database and results folder; its stdout, stderr."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / f"{name}.py"),
         "--db", str(tmp_path / "e.db"), "--out", str(tmp_path / "out"), *args],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, proc.stderr


def table(md: str, first_header: str) -> tuple[list[str], list[list[str]]]:
    """The markdown table whose first column is ``first_header``: its headers and rows."""
    lines = md.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"| {first_header} |"))
    rows = []
    for ln in lines[start + 2 :]:
        if not ln.startswith("|"):
            break
        rows.append([cell.strip() for cell in ln.strip("|").split("|")])
    headers = [cell.strip() for cell in lines[start].strip("|").split("|")]
    assert rows and all(len(r) == len(headers) for r in rows), lines[start:]
    return headers, rows


def test_scaling_law_and_plateau_share_runs_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _, err = experiment("scaling_law", tmp_path, *TASK, *TINY, *FAST, "--fit-max-k", "1")
    assert re.search(r"drew 4 \(0 already stored\)", err), err
    md = (out / "scaling_law.md").read_text()
    headers, rows = table(md, "run")
    assert headers[:5] == ["run", "problems", "K", "pass@1", "coverage@K"]
    assert "a [95% CI]" in headers and "abs. error at K (points)" in headers
    assert rows[0][0] == "gym:chain_sum / smollm2-135m" and rows[0][1:3] == ["2", "2"]
    # two k values cannot carry a fit: the row says why instead of inventing one
    assert "not fitted" in rows[0][5]
    _, cov = table(md, "k")
    assert [r[0] for r in cov] == ["1", "2"]
    assert (out / "scaling_law-gym-chain_sum.html").read_text().startswith("<!doctype html>")

    # the plateau reads the same run: nothing is drawn again
    _, err = experiment("plateau", tmp_path, *TASK, *TINY, *FAST)
    assert re.search(r"drew 0 \(4 already stored\)", err), err
    md = (out / "plateau.md").read_text()
    headers, rows = table(md, "run")
    assert headers[-3:] == ["coverage stops at k", "majority stops at k", "best-of stops at k"]
    assert rows[0][5] != "no log-probabilities"  # the experiments sample with token logprobs
    headers, per_k = table(md, "k")
    assert headers == ["k", "coverage", "majority", "best-of (logprob)", "coverage - majority"]
    assert [r[0] for r in per_k] == ["1", "2"]
    assert all(re.fullmatch(r"\d+\.\d", v) for r in per_k for v in r[1:4]), per_k

    # a larger --n extends the same run by the missing samples only
    _, err = experiment("scaling_law", tmp_path, *TASK, *TINY[:2], "--n", "3", *TINY[4:], *FAST)
    assert re.search(r"drew 2 \(4 already stored\)", err), err


def test_plateau_k_is_the_first_k_after_which_no_doubling_gains() -> None:
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        from plateau import plateau_k
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    import numpy as np

    ks = [1, 2, 4, 8, 16]
    # 2 -> 4 gains 5 points, 4 -> 8 and 8 -> 16 under 1 point each
    assert plateau_k(ks, np.array([0.1, 0.2, 0.25, 0.255, 0.258]), 0.01) == "4"
    assert plateau_k(ks, np.array([0.1, 0.2, 0.3, 0.4, 0.5]), 0.01) == "not by 16"
    # after a dip, the plateau starts only after the last doubling that gains
    assert plateau_k(ks, np.array([0.3, 0.35, 0.2, 0.3, 0.3]), 0.01) == "8"
    assert plateau_k(ks, np.array([0.3, 0.3, 0.2, 0.2, 0.25]), 0.01) == "not by 16"
    assert plateau_k(ks, np.array([0.5, 0.5, 0.5, 0.5, 0.5]), 0.01) == "1"


def test_equal_compute_puts_two_models_on_flops(tmp_path: Path) -> None:
    experiment(
        "equal_compute", tmp_path, *TASK, *TINY, *FAST,
        "--model", "smollm2-135m=2", "--model", "qwen2.5-coder-0.5b=1",
    )  # fmt: skip
    md = (tmp_path / "out" / "equal_compute.md").read_text()
    headers, runs = table(md, "run")
    assert headers[:6] == ["run", "parameters", "problems", "K", "FLOPs per k", "FLOPs at K"]
    assert [r[0] for r in runs] == ["smollm2-135m x 2", "qwen2.5-coder-0.5b x 1"]
    small, large = (float(r[4]) for r in runs)
    assert large > small > 0
    headers, matched = table(md, "FLOPs")
    assert headers[1] == "smollm2-135m: k" and headers[4] == "qwen2.5-coder-0.5b: k"
    assert matched[0][4] == "1"  # the budget of one sample of the larger model
    page = (tmp_path / "out" / "equal_compute-gym-chain_sum.html").read_text()
    assert "Coverage versus cost (flops)" in page and "FLOPs" in page


def test_sampling_grid_has_nine_cells(tmp_path: Path) -> None:
    experiment("sampling_grid", tmp_path, *TASK, *TINY, *FAST)
    md = (tmp_path / "out" / "sampling_grid.md").read_text()
    headers, rows = table(md, "temperature")
    assert headers[3:7] == ["pass@1", "coverage@k", "coverage@K", "majority@K"]
    assert {(r[0], r[1]) for r in rows} == {
        (t, trunc)
        for t in ("0.3", "0.6", "1")
        for trunc in ("none", "min-p 0.05", "top-k 40 + min-p 0.05 + top-p 0.95")
    }
    assert len({r[2] for r in rows}) == 9  # nine distinct runs
    assert "coverage@K" in md.split("Temperature: pass@1 against coverage at large k")[1]
    page = (tmp_path / "out" / "sampling_grid-gym-chain_sum.html").read_text()
    assert page.count("<tr><td class=l>") >= 9


def test_probe_chooses_by_the_pass1_band(tmp_path: Path) -> None:
    args = ["--task", "gym:chain_sum", "--task", "gym:no_such_dataset", "-T", "size=4"]
    experiment("probe", tmp_path, *args, *TINY, *FAST, "--band", "0,1")
    md = (tmp_path / "out" / "probe.md").read_text()
    headers, rows = table(md, "task")
    assert headers[:3] == ["task", "pass@1", "coverage@K"] and headers[-1] == "chosen"
    by_task = {r[0]: r for r in rows}
    assert by_task["gym:no_such_dataset"][-1].startswith("skipped")
    p1 = float(by_task["gym:chain_sum"][1])
    chosen = by_task["gym:chain_sum"][-1]
    assert chosen == "yes" or chosen.startswith("no: "), chosen
    assert ("1. gym:chain_sum" in md) == (chosen == "yes"), (p1, md)


def test_tree_vs_sampling_measures_every_method_and_resumes(tmp_path: Path) -> None:
    args = ["--model", "smollm2-135m", "--problems", "1", "--max-tokens", "32", "--threads", "1"]
    args += ["--budget", "small", "--method", "vote", "--method", "beam"]
    experiment("tree_vs_sampling", tmp_path, *TASK, *args)
    md = (tmp_path / "out" / "tree_vs_sampling.md").read_text()
    headers, rows = table(md, "method")
    assert headers[2:4] == ["accuracy", "tokens evaluated / query"]
    assert [(r[0], r[1]) for r in rows] == [("vote", "small"), ("beam", "small")]
    for r in rows:
        evaluated, prompt, completion = (int(c.replace(",", "")) for c in r[3:6])
        assert evaluated == prompt + completion and completion > 0
    # beam search makes many calls (steps and the judge's), a vote one
    assert float(rows[1][6]) > float(rows[0][6]) == 1.0
    assert (tmp_path / "out" / "tree_vs_sampling.svg").read_text().startswith("<svg")
    # a rerun resumes: the stored answers are measured again, nothing is drawn anew
    _, err = experiment("tree_vs_sampling", tmp_path, *TASK, *args)
    assert (tmp_path / "out" / "tree_vs_sampling.md").read_text() == md, err
