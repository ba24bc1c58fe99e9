"""Token, FLOP and dollar accounting of a run, and its linear cost model in k."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ponder.analysis import (
    Prices,
    ProblemSamples,
    RunData,
    cost_curve,
    cost_summary,
    model_params,
)
from ponder.errors import UserError
from ponder.models import MODELS
from ponder.records import SamplingParams
from ponder.store import RunSpec

SMOL = "llamacpp:smollm2-135m@b179c9523d0e"


def problem(
    pid: str, prompt: list[int], completion: list[int], latency: list[float]
) -> ProblemSamples:
    n = len(prompt)
    return ProblemSamples(
        problem_id=pid,
        reference=None,
        correct=np.zeros(n, dtype=np.bool_),
        answers=[None] * n,
        scores=np.full(n, np.nan),
        completion_tokens=np.array(completion, dtype=np.int64),
        prompt_tokens=np.array(prompt, dtype=np.int64),
        latency_s=np.array(latency, dtype=np.float64),
    )


def run(model: str = SMOL, *, empty: bool = False) -> RunData:
    problems = [
        # Two requests of two samples each; the store split a 41-token prompt as 21 + 20.
        problem("p1", [21, 20, 21, 20], [10, 30, 20, 40], [1.0, 1.0, 2.0, 2.0]),
        problem("p2", [50, 50], [100, 200], [3.0, 3.0]),
    ]
    if empty:
        problems.append(problem("p3", [], [], []))
    spec = RunSpec(model=model, task={"name": "t"}, params=SamplingParams())
    return RunData(run_id="abc123def456", spec=spec, verifier="math", problems=problems)


def test_model_params_parses_registered_identities() -> None:
    assert model_params(SMOL) == MODELS["smollm2-135m"].params
    assert model_params("llamacpp:qwen2.5-coder-0.5b@1d9614638d18") == 494_032_768
    assert model_params("openai:http://host/v1:smollm2-135m") is None
    assert model_params("llamacpp:/models/x@y/smollm2-135m.gguf") is None
    assert model_params("llamacpp:unknown-model@0123456789ab") is None
    assert model_params("scripted:smollm2-135m@b179c9523d0e") is None


def test_cost_summary_counts_tokens_flops_and_dollars() -> None:
    prices = Prices(prompt_per_million=2.0, completion_per_million=10.0)
    s = cost_summary(run(), prices=prices)
    assert (s.problems, s.samples) == (2, 6)
    assert s.prompt_tokens == 82 + 100
    assert s.completion_tokens == 100 + 300
    assert s.total_tokens == 582
    assert s.params == 134_515_008
    assert s.flops == 2 * 134_515_008 * 582
    assert s.dollars == pytest.approx((182 * 2.0 + 400 * 10.0) / 1e6)
    assert s.sample_latency_s == pytest.approx(12.0 / 6)
    assert math.isnan(s.wall_s)


def test_cost_summary_overrides_and_unknown_params() -> None:
    s = cost_summary(run("openai:http://host/v1:m"), wall_s=7.5)
    assert s.params is None and math.isnan(s.flops)
    assert s.dollars == 0.0 and s.wall_s == 7.5
    given = cost_summary(run("openai:http://host/v1:m"), params=1_000)
    assert given.flops == 2 * 1_000 * 582


def test_cost_summary_of_a_run_without_samples() -> None:
    data = run()
    empty = RunData(run_id="r", spec=data.spec, verifier="math", problems=[])
    s = cost_summary(empty)
    assert s.samples == 0 and s.flops == 0.0 and math.isnan(s.sample_latency_s)


def test_cost_curve_is_linear_in_k() -> None:
    prices = Prices(prompt_per_million=1.0, completion_per_million=4.0)
    ks = np.array([1, 2, 4, 8, 100])
    curve = cost_curve(run(empty=True), ks, prices=prices)
    assert set(curve) == {"completion_tokens", "prompt_tokens", "total_tokens", "flops", "dollars"}
    assert all(v.shape == ks.shape for v in curve.values())
    # Per sample: p1 costs 25 completion + 20.5 prompt tokens, p2 150 + 50; the empty p3 is left out.
    np.testing.assert_allclose(curve["completion_tokens"], 175.0 * ks)
    np.testing.assert_allclose(curve["prompt_tokens"], 70.5 * ks)
    np.testing.assert_allclose(curve["total_tokens"], 245.5 * ks)
    np.testing.assert_allclose(curve["flops"], 2 * 134_515_008 * 245.5 * ks)
    np.testing.assert_allclose(curve["dollars"], (70.5 * 1.0 + 175.0 * 4.0) * ks / 1e6)
    # At the budget the run drew for p2 (2 samples), its share equals what was actually spent.
    p2_only = RunData(run_id="r", spec=run().spec, verifier="math", problems=[run().problems[1]])
    assert cost_curve(p2_only, [2])["total_tokens"][0] == cost_summary(p2_only).total_tokens


def test_cost_curve_unknown_params_and_bad_ks() -> None:
    curve = cost_curve(run("openai:http://h/v1:m"), np.array([1, 2]))
    assert np.all(np.isnan(curve["flops"]))
    assert np.all(curve["dollars"] == 0)
    with pytest.raises(UserError):
        cost_curve(run(), np.array([1, -2]))


def test_flops_axis_is_labelled_with_unit_prefixes() -> None:
    """FLOPs run to 1e12 and beyond: ticks read 100G, 1T, never 100000M or 1e+06M."""
    import re

    from ponder.analysis import build_report, render_html

    data = run()
    data.problems[0].correct[0] = True  # a curve to draw
    html = render_html([build_report(data, bootstrap=0, subsets=2)], cost_x="flops")
    at = html.index("FLOPs (2 x parameters")
    chart = html[html.rfind("<svg", 0, at) : html.index("</svg>", at)]
    assert re.search(r">\d+(\.\d+)?G<", chart), "no tick labelled in G(iga)"
    assert not re.search(r">\d{4,}(\.\d+)?M<|e\+", chart)
