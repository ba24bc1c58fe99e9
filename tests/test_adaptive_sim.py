"""Adaptive stop rules simulated from stored samples: `simulate_adaptive` and `ponder report --adaptive`.

Oracles: expectations worked out by hand over every ordering of a tiny problem; the scalar
`Schedule.replay` on every simulated row; and a plain-Python majority vote over the samples each
replay used.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ponder.adaptive import Schedule, StopRule, answer_key, make_stop_rule
from ponder.analysis import ProblemSamples, RunData, simulate_adaptive
from ponder.cli import app
from ponder.errors import ConfigError, UnknownNameError, UserError
from ponder.records import SamplingParams
from ponder.store import RunSpec
from tests.test_report import make_run

RULES = ("fixed", "margin", "supermajority", "beta", "dirichlet", "window")


def _problem(
    pid: str, answers: list[str | None], right: str, tokens: list[int] | None = None
) -> ProblemSamples:
    n = len(answers)
    return ProblemSamples(
        problem_id=pid,
        reference=right,
        correct=np.array([answer_key(a) == right for a in answers], dtype=np.bool_),
        answers=answers,
        scores=np.full(n, np.nan),
        completion_tokens=np.array(tokens if tokens is not None else [10] * n, dtype=np.int64),
        prompt_tokens=np.zeros(n, dtype=np.int64),
        latency_s=np.zeros(n),
    )


def _run(problems: list[ProblemSamples]) -> RunData:
    spec = RunSpec(model="synthetic", task={"name": "synthetic"}, params=SamplingParams())
    return RunData(run_id=spec.run_id, spec=spec, verifier="math", problems=problems)


def _point(sim, rule: str, threshold: float | None = None):
    [p] = [p for p in sim.points if p.rule == rule and p.threshold == threshold]
    return p


# --- exact enumeration against expectations worked out by hand ---------------------------------

# Four samples: A (10 tokens), A (20), B (30), no answer (40); A is right. Rules asked after every
# sample (rounds of 1) from the first on.
HAND = _run([_problem("p", ["A", "A", "B", None], "A", [10, 20, 30, 40])])


def test_exact_margin_by_hand() -> None:
    # margin >= 1 fires at the first answered sample: at 1 unless the first has no answer (6 of 24
    # orders), then at 2. E[samples] = (18 + 12) / 24; the answer is A with P = 1/2 + 1/4 * 2/3;
    # tokens: the orders stopping at 1 sum 6 * 60, those at 2 sum 6 * 40 + 2 * 60: 720 / 24.
    rule = make_stop_rule("margin", {"votes": 1, "min_samples": 1})
    sim = simulate_adaptive(HAND, [rule], {"margin": [1]}, round_size=1, exact=True)
    p = _point(sim, "margin", 1.0)
    assert sim.exact and sim.orderings == 24 and sim.max_samples == 4
    assert p.samples.mean == pytest.approx(1.25)
    assert p.accuracy.mean == pytest.approx(2 / 3)
    assert p.coverage.mean == pytest.approx(2 / 3)
    assert p.tokens.mean == pytest.approx(30.0)
    assert p.early == pytest.approx(1.0)


def test_exact_window_by_hand() -> None:
    # window >= 2 fires where the two A are adjacent: of the 12 distinct patterns AABN, AANB stop
    # at 2, BAAN, NAAB at 3, the other 8 (BNAA included, at the maximum) at 4: 42 / 12. The vote
    # is A at every stop. Window 3 never fires: always 4.
    rule = make_stop_rule("window", {"size": 2, "min_samples": 1})
    sim = simulate_adaptive(HAND, [rule], {"window": [2, 3]}, round_size=1, exact=True)
    two, three = _point(sim, "window", 2.0), _point(sim, "window", 3.0)
    assert two.samples.mean == pytest.approx(3.5)
    assert two.accuracy.mean == pytest.approx(1.0)
    assert two.early == pytest.approx(4 / 12)
    assert three.samples.mean == pytest.approx(4.0) and three.early == 0.0


def test_exact_baseline_by_hand() -> None:
    # majority@1: A w.p. 1/2. @2: pairs {AA}=1, {AB}x2 = tie 1/2, {AN}x2 = 1, {BN} = 0 -> 4/6.
    # @3: leave one out: without an A (x2) a tie (1/2), without B or N: A -> 3/4. @4: A.
    # coverage@k: P(an A among the first k) = 1/2, 5/6, 1, 1. Tokens: k * 25.
    sim = simulate_adaptive(HAND, ["fixed"], round_size=1, exact=True)
    assert [b.k for b in sim.baseline] == [1, 2, 3, 4]
    assert [b.accuracy.mean for b in sim.baseline] == pytest.approx([1 / 2, 2 / 3, 3 / 4, 1.0])
    assert [b.coverage.mean for b in sim.baseline] == pytest.approx([1 / 2, 5 / 6, 1.0, 1.0])
    assert [b.tokens.mean for b in sim.baseline] == pytest.approx([25.0, 50.0, 75.0, 100.0])
    # Cut at 2 samples: every ordered choice of 2 of the 4 (12), the same expectations.
    two = simulate_adaptive(HAND, ["fixed"], round_size=1, exact=True, max_samples=2)
    assert two.orderings == 12 and [b.k for b in two.baseline] == [1, 2]
    assert [b.accuracy.mean for b in two.baseline] == pytest.approx([1 / 2, 2 / 3])
    assert [b.coverage.mean for b in two.baseline] == pytest.approx([1 / 2, 5 / 6])


# --- the vectorised simulation against Schedule.replay, row by row -------------------------------


def _random_run(rng: np.random.Generator, problems: int, n_lo: int, n_hi: int) -> RunData:
    out = []
    for i in range(problems):
        n = int(rng.integers(n_lo, n_hi + 1))
        classes = int(rng.integers(1, 7))
        shares = rng.dirichlet(np.full(classes + 1, 0.7))
        label = rng.choice(classes + 1, size=n, p=shares)
        # Class `classes` has no answer; some answers carry blank space (the same class).
        answers = [
            None if lab == classes else (f" c{lab}\n" if rng.random() < 0.2 else f"c{lab}")
            for lab in label.tolist()
        ]
        out.append(_problem(f"p{i}", answers, "c0", rng.integers(1, 50, size=n).tolist()))
    return _run(out)


def _vote(answers: list[str | None], right: str) -> float:
    """Expected correctness of majority vote with uniform tie-breaking (plain Python)."""
    counts: dict[str, int] = {}
    for a in answers:
        key = answer_key(a)
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return 0.0
    top = max(counts.values())
    tied = [a for a, c in counts.items() if c == top]
    return sum(a == right for a in tied) / len(tied)


def _rule_at(name: str, threshold: float | None, min_samples: int) -> StopRule:
    rule = make_stop_rule(name, {"min_samples": min_samples})
    return rule if threshold is None else rule.with_threshold(threshold)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_row_equals_schedule_replay(seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = _random_run(rng, problems=12, n_lo=20, n_hi=60)
    round_size = int(rng.integers(1, 6))
    min_samples = int(rng.integers(1, 9))
    rules = [make_stop_rule(name, {"min_samples": min_samples}) for name in RULES]
    sim = simulate_adaptive(
        data, rules, orderings=15, round_size=round_size, seed=seed, keep_rows=True
    )
    assert sim.rows is not None and sim.max_samples == min(p.n for p in data.problems)
    by_id = {p.problem_id: p for p in data.problems}
    first_ask = next(k for k in sim.checkpoints if k >= min_samples)
    for j, point in enumerate(sim.points):
        schedule = Schedule(_rule_at(point.rule, point.threshold, min_samples), sim.max_samples,
                            round_size)  # fmt: skip
        accuracy, coverage, tokens, samples = [], [], [], []
        for pid, orders, used in zip(
            sim.rows.problem_ids, sim.rows.orders, sim.rows.samples, strict=True
        ):
            p = by_id[pid]
            acc, cov, tok, smp = [], [], [], []
            for r, order in enumerate(orders.T.tolist()):
                answers = [p.answers[i] for i in order]
                decision = schedule.replay(answers)
                assert decision.stopped
                assert used[j, r] == decision.samples, (point.label, pid, r)
                # Never before the rule's minimum (its first checkpoint) nor after the maximum.
                assert first_ask <= decision.samples <= sim.max_samples
                head = order[: decision.samples]
                acc.append(_vote([p.answers[i] for i in head], "c0"))
                cov.append(float(p.correct[head].any()))
                tok.append(float(p.completion_tokens[head].sum()))
                smp.append(decision.samples)
            accuracy.append(np.mean(acc))
            coverage.append(np.mean(cov))
            tokens.append(np.mean(tok))
            samples.append(np.mean(smp))
        assert point.accuracy.mean == pytest.approx(np.mean(accuracy), abs=1e-12)
        assert point.coverage.mean == pytest.approx(np.mean(coverage), abs=1e-12)
        assert point.tokens.mean == pytest.approx(np.mean(tokens), rel=1e-12)
        assert point.samples.mean == pytest.approx(np.mean(samples), rel=1e-12)
        assert point.accuracy.stderr == pytest.approx(
            np.std(accuracy, ddof=1) / math.sqrt(len(accuracy)), abs=1e-12
        )


def test_exact_mode_equals_replay_expectation() -> None:
    # Exact enumeration of 5 samples (120 orders) against the mean of replays over them all.
    data = _random_run(np.random.default_rng(5), problems=4, n_lo=5, n_hi=5)
    rules = [make_stop_rule(name, {"min_samples": 2}) for name in RULES]
    sim = simulate_adaptive(data, rules, round_size=2, exact=True)
    assert sim.checkpoints == [2, 4, 5] and sim.orderings == 120
    for point in sim.points:
        schedule = Schedule(_rule_at(point.rule, point.threshold, 2), 5, 2)
        per_problem = []
        for p in data.problems:
            used = [schedule.replay(list(o)).samples for o in itertools.permutations(p.answers)]
            per_problem.append(np.mean(used))
        assert point.samples.mean == pytest.approx(np.mean(per_problem), rel=1e-12)


def test_fixed_rule_is_the_majority_baseline_at_n() -> None:
    data = _random_run(np.random.default_rng(7), problems=10, n_lo=30, n_hi=30)
    sim = simulate_adaptive(data, ["fixed", "margin"], orderings=30)
    fixed, last = _point(sim, "fixed"), sim.baseline[-1]
    assert fixed.samples.mean == 30 and fixed.early == 0.0 and last.k == 30
    assert fixed.accuracy.mean == pytest.approx(last.accuracy.mean, abs=1e-12)
    assert fixed.coverage.mean == pytest.approx(last.coverage.mean, abs=1e-12)
    assert fixed.tokens.mean == pytest.approx(last.tokens.mean, rel=1e-12)
    # Every sample of every problem is used by fixed N: its tokens are the run's.
    assert fixed.tokens.mean == pytest.approx(
        np.mean([p.completion_tokens.sum() for p in data.problems])
    )
    # The baseline's checkpoints are the rounds, and majority@k is defined at every one.
    assert [b.k for b in sim.baseline] == [*list(range(4, 31, 4)), 30]
    verdict = {v.rule: v for v in sim.verdicts()}["fixed"]
    assert verdict.dominates and verdict.ratio == pytest.approx(1.0)
    # Paired per problem, fixed N and majority@N are the same numbers: no gap, no spread.
    assert verdict.gaps == [pytest.approx(0.0, abs=1e-12)]
    assert verdict.gap_stderr == [pytest.approx(0.0, abs=1e-12)] and verdict.within_noise
    # The per-problem values are what the means and the paired errors are made of.
    margin = {v.rule: v for v in sim.verdicts()}["margin"]
    for point, gap, err in zip(sim.curve("margin"), margin.gaps, margin.gap_stderr, strict=True):
        j = sim.points.index(point)
        per_problem = sim.accuracy_by_problem[:, j]
        assert per_problem.mean() == pytest.approx(point.accuracy.mean, abs=1e-12)
        base = [np.interp(point.samples.mean, sim.checkpoints, b) for b in sim.baseline_by_problem]
        diff = per_problem - np.array(base)
        assert gap == pytest.approx(diff.mean(), abs=1e-12)
        assert err == pytest.approx(diff.std(ddof=1) / math.sqrt(10), abs=1e-12)
    assert sim.baseline_by_problem.mean(axis=0) == pytest.approx(
        [b.accuracy.mean for b in sim.baseline], abs=1e-12
    )


def test_seeded_orderings_are_reproducible_and_per_problem() -> None:
    data = _random_run(np.random.default_rng(3), problems=6, n_lo=16, n_hi=16)
    a = simulate_adaptive(data, ["window"], orderings=10, seed=4, keep_rows=True)
    b = simulate_adaptive(data, ["window"], orderings=10, seed=4, keep_rows=True)
    c = simulate_adaptive(data, ["window"], orderings=10, seed=5)
    assert a.points == b.points and a.baseline == b.baseline
    assert a.points != c.points
    # A problem's orderings do not depend on the other problems.
    alone = simulate_adaptive(_run(data.problems[2:3]), ["window"], orderings=10, seed=4,
                              keep_rows=True)  # fmt: skip
    assert alone.rows is not None and a.rows is not None
    i = a.rows.problem_ids.index(data.problems[2].problem_id)
    assert np.array_equal(alone.rows.orders[0], a.rows.orders[i])
    for order in a.rows.orders[i].T.tolist():  # each row is a permutation
        assert sorted(order) == list(range(16))


def test_max_samples_leaves_out_smaller_problems() -> None:
    data = _random_run(np.random.default_rng(8), problems=8, n_lo=8, n_hi=24)
    n = sorted(p.n for p in data.problems)
    sim = simulate_adaptive(data, ["margin"], orderings=5, max_samples=n[3])
    assert sim.max_samples == n[3]
    assert sim.left_out == sum(x < n[3] for x in n) and sim.problems == 8 - sim.left_out
    default = simulate_adaptive(data, ["margin"], orderings=5)
    assert default.max_samples == n[0] and default.left_out == 0


def test_errors() -> None:
    data = _random_run(np.random.default_rng(9), problems=2, n_lo=12, n_hi=12)
    with pytest.raises(UnknownNameError, match="nosuch"):
        simulate_adaptive(data, ["nosuch"])
    with pytest.raises(UserError, match="orderings"):
        simulate_adaptive(data, ["margin"], orderings=0)
    with pytest.raises(UserError, match="40,320"):
        simulate_adaptive(data, ["margin"], exact=True)  # 12! orders
    with pytest.raises(ConfigError, match="share"):
        simulate_adaptive(data, ["supermajority"], {"supermajority": [1.5]})
    with pytest.raises(ConfigError, match="minimum"):
        simulate_adaptive(data, [make_stop_rule("margin", {"min_samples": 20})])
    with pytest.raises(UserError, match="no problem"):
        simulate_adaptive(data, ["margin"], max_samples=13)


# --- ponder report --adaptive on a real store ---------------------------------------------------


def test_report_adaptive_terminal_json_html(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    run_id = make_run(db, problems=5, n=16)
    runner = CliRunner()
    base = ["report", run_id, "--db", str(db), "--bootstrap", "50", "--subsets", "20"]
    table = runner.invoke(app, [*base, "--adaptive", "--orderings", "20", "--rules",
                                "margin,window"])  # fmt: skip
    assert table.exit_code == 0, table.output
    out = table.stdout
    assert "adaptive stop rules simulated on 5 problems" in out and "N = 16" in out
    assert re.search(r"margin\s+│\s+1\s+│", out) and re.search(r"window\s+│\s+16\s+│", out)
    assert re.search(r"maj@k\s+│\s+k=16\s+│\s+16\s+│", out)
    assert "beta" not in out  # only the rules asked for

    result = runner.invoke(app, [*base, "--adaptive", "--orderings", "10", "--json"])
    assert result.exit_code == 0, result.output
    sim = json.loads(result.stdout)["runs"][0]["adaptive"]
    assert sim["max_samples"] == 16 and sim["orderings"] == 10 and sim["problems"] == 5
    assert {p["rule"] for p in sim["points"]} == {
        "margin", "supermajority", "beta", "dirichlet", "window"
    }  # fmt: skip
    assert len(sim["points"]) == 50 and [b["k"] for b in sim["baseline"]] == [4, 8, 12, 16]
    for p in sim["points"]:
        assert set(p) >= {"label", "threshold", "samples", "tokens", "accuracy", "coverage",
                          "early", "at_or_above_majority"}  # fmt: skip
        assert 4 <= p["samples"]["mean"] <= 16 and 0 <= p["accuracy"]["mean"] <= 1
        assert p["coverage"]["mean"] >= p["accuracy"]["mean"] - 1e-12  # any correct >= vote
    assert {v["rule"] for v in sim["verdicts"]} == {p["rule"] for p in sim["points"]}

    html = tmp_path / "r.html"
    page_run = runner.invoke(app, [*base, "--adaptive", "--orderings", "10", "--html", str(html)])
    assert page_run.exit_code == 0, page_run.output
    page = html.read_text()
    start = page.index("<h2>Adaptive stop rules")
    section = page[start : page.index("<h2>", start + 4)]
    assert section.count("<svg") == 2  # accuracy vs samples, accuracy vs tokens
    assert "mean samples per problem" in section and "mean completion tokens per problem" in section
    assert "majority@k (fixed N)" in section and "<table>" in section

    plain = runner.invoke(app, [*base, "--html", str(tmp_path / "plain.html")])
    assert plain.exit_code == 0
    assert "Adaptive stop rules" not in (tmp_path / "plain.html").read_text()


def test_report_adaptive_errors(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    run_id = make_run(db, problems=2, n=8)
    runner = CliRunner()
    base = ["report", run_id, "--db", str(db), "--bootstrap", "20", "--subsets", "10"]
    unknown = runner.invoke(app, [*base, "--adaptive", "--rules", "margin,nosuch"])
    assert unknown.exit_code == 2 and "nosuch" in unknown.output
    assert "margin" in unknown.output  # the message lists the valid names
    zero = runner.invoke(app, [*base, "--adaptive", "--orderings", "0"])
    assert zero.exit_code == 2 and "--orderings must be >= 1" in zero.output
    alone = runner.invoke(app, [*base, "--orderings", "5"])
    assert alone.exit_code == 2 and "--adaptive" in alone.output
