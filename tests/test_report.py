"""`ponder report`: terminal, JSON, self-contained HTML (checked in headless Chromium), plots."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ponder.analysis import declared_verifier, load_run, run_verifier
from ponder.backends import ScriptedBackend
from ponder.cli import app
from ponder.errors import UserError
from ponder.records import SamplingParams, Verdict
from ponder.runs import sample_run, verify_run
from ponder.store import Store
from ponder.tasks import get_task, select_problems
from ponder.verify import MathVerifier
from tests._browser import CHROMIUM_ARGS, require_chromium


def make_run(
    db: Path,
    *,
    problems: int = 6,
    n: int = 16,
    seed: int = 0,
    task: str = "gsm8k",
    verify: bool = True,
) -> str:
    """A real store with a real task and verifier; a scripted model that is right ~30% of the time."""
    the_task = get_task(task)
    chosen = select_problems(the_task.problems(), limit=problems)
    refs = {p.question: p.reference for p in chosen}

    def answer(prompt, i, params):
        question = prompt[-1].content
        ref = next(r for q, r in refs.items() if q in question)
        h = (zlib.crc32(f"{question}|{i}|{params.seed}".encode()) % 100) / 100
        return f"Working... #### {ref}" if h < 0.3 else f"So the answer is {int(h * 10) + 1000}"

    backend = ScriptedBackend(fn=answer, batch=8)
    params = SamplingParams(seed=seed, max_tokens=64)
    with Store(db) as store:
        rep = asyncio.run(sample_run(store, backend, the_task, chosen, n, params))
        if verify:
            with MathVerifier() as verifier:
                verify_run(store, rep.run_id, verifier)
    return rep.run_id


class _Counter(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        for name, value in attrs:
            if name in ("src", "href") and value and re.match(r"(https?:)?//", value):
                self.external.append(value)


def test_report_html_plots_and_json(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    run_a = make_run(db, seed=0)
    run_b = make_run(db, seed=1)
    html_path = tmp_path / "report.html"
    plots = tmp_path / "plots"
    result = CliRunner().invoke(
        app,
        [
            "report",
            run_a,
            run_b,
            "--db",
            str(db),
            "--html",
            str(html_path),
            "--plots",
            str(plots),
            "--json",
            "--bootstrap",
            "200",
            "--subsets",
            "50",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["run"] for r in data["runs"]] == [run_a, run_b]
    first = data["runs"][0]
    assert first["k"][0] == 1 and first["k"][-1] == 16
    cov = first["coverage"]["mean"]
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(cov))  # coverage grows with k
    maj = first["selection"]["majority"]
    assert all(m <= c + 0.05 for m, c in zip(maj, cov, strict=True))  # voting cannot beat coverage
    assert "a" in first["scaling_law"] or "error" in first["scaling_law"]

    for name in ("coverage", "scaling", "cost"):
        for ext in ("png", "svg"):
            assert (plots / f"{name}.{ext}").stat().st_size > 1000

    page = html_path.read_text()
    parser = _Counter()
    parser.feed(page)
    assert parser.tags.get("svg", 0) >= 3
    assert parser.tags.get("details", 0) == 12  # sample browser: 6 problems x 2 runs
    assert parser.external == [] and "<script" not in page  # opens offline
    assert run_a in page and run_b in page and "gsm8k/0" in page


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    run_id = make_run(db)
    html_path = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", run_id, "--db", str(db), "--html", str(html_path)])
    assert result.exit_code == 0, result.output
    browser = str(require_chromium())
    flags = [*CHROMIUM_ARGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", html_path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert dom.count("<svg") >= 3 and "Scaling law" in dom and "gsm8k/5" in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, *flags, f"--screenshot={shot}", "--window-size=1200,2400", html_path.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_report_refuses_to_mix_tasks(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    run_a = make_run(db, task="gsm8k")
    run_b = make_run(db, task="aime2025", problems=2, n=4)
    result = CliRunner().invoke(app, ["report", run_a, run_b, "--db", str(db)])
    assert result.exit_code == 2 and "different tasks" in result.output


def _json(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_coverage_at_k_means_one_number_in_every_output(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    run_id = make_run(db, problems=6, n=16)
    summary = _json("verify", run_id, "--db", str(db), "--json")["summary"]
    report = _json("report", run_id, "--db", str(db), "--json", "--bootstrap", "0")["runs"][0]
    points = {p["k"]: p for p in summary["points"]}
    assert set(points) == {1, 2, 4, 8, 16} and set(points) <= set(report["k"])
    for i, k in enumerate(report["k"]):
        if k in points:
            assert points[k]["coverage"] == pytest.approx(report["coverage"]["mean"][i], abs=1e-12)
            assert points[k]["solved_by_first_k"] == report["solved_by_first_k"][i]
    # the two differ in general: the first-k share depends on where the correct samples sit
    assert any(p["coverage"] != p["solved_by_first_k"] for p in points.values())
    assert "pass_at_k" not in points[1] and "first_k_coverage" not in report

    text = CliRunner().invoke(app, ["verify", run_id, "--db", str(db)], env={"COLUMNS": "200"})
    assert "coverage@k" in text.stdout and "solved by first k" in text.stdout
    page = tmp_path / "r.html"
    CliRunner().invoke(app, ["report", run_id, "--db", str(db), "--html", str(page)])
    html_text = page.read_text()
    assert "<th>coverage@k</th>" in html_text and "<th>solved by first k</th>" in html_text
    assert "first-k coverage" not in html_text
    # every sampling parameter of the run is shown, truncation included
    assert "<th>top_k</th><th>min_p</th>" in html_text and "<td>off</td><td>off</td>" in html_text


def test_one_rule_chooses_the_verifier_everywhere(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    run_id = make_run(db, problems=2, n=4)
    with Store(db) as store:
        # A second verifier whose name sorts first, and which calls every sample wrong.
        other = [(s.id or 0, Verdict(status="incorrect")) for s in store.samples(run_id)]
        store.add_verdicts("aaa", other)
        assert run_verifier(store, run_id) == "math"  # the task's own, not the first by name
        assert run_verifier(store, run_id, "aaa") == "aaa"
        with pytest.raises(UserError, match="no verdicts from verifier 'zzz'"):
            run_verifier(store, run_id, "zzz")
        assert load_run(store, run_id).verifier == "math"
    show = _json("show", run_id, "--db", str(db), "--json")
    assert show["verifier"] == "math" and sum(p["correct"] for p in show["problems"]) > 0
    report = _json("report", run_id, "--db", str(db), "--json", "--bootstrap", "0")["runs"][0]
    assert report["verifier"] == "math"
    lines = CliRunner().invoke(app, ["export", run_id, "--db", str(db)]).stdout.splitlines()
    assert {json.loads(x)["verifier"] for x in lines} == {"math"}
    shown = _json("show", run_id, "--db", str(db), "--json", "--verifier", "aaa")
    assert shown["verifier"] == "aaa" and sum(p["correct"] for p in shown["problems"]) == 0
    bad = CliRunner().invoke(app, ["show", run_id, "--db", str(db), "--verifier", "zzz"])
    assert bad.exit_code == 2 and "ponder verify" in bad.output

    fresh = make_run(db, problems=1, n=2, seed=5, verify=False)
    with Store(db) as store:
        assert run_verifier(store, fresh, need_verdicts=False) == "math"
        assert declared_verifier(store.get_run(fresh).spec) == "math"  # what `verify` runs
        with pytest.raises(UserError, match="no verdicts yet"):
            run_verifier(store, fresh)
        # A run verified only by another verifier is read with that one.
        store.add_verdicts(
            "aaa", [(s.id or 0, Verdict(status="correct")) for s in store.samples(fresh)]
        )
        assert run_verifier(store, fresh) == "aaa"
    unverified = _json("show", fresh, "--db", str(db), "--json")
    assert unverified["verifier"] == "aaa"


def _svg_x_tick_labels(svg: str) -> list[str]:
    """The numeric labels on an inline matplotlib SVG's x axis (text is kept as text)."""
    start = svg.index('<g id="matplotlib.axis_1">')
    axis = svg[start : svg.index('<g id="matplotlib.axis_2">', start)]
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", axis)
    return [t.strip() for t in texts if re.fullmatch(r"[0-9.]+[kM]?", t.strip())]


def test_cost_chart_labels_its_token_axis_within_one_decade(tmp_path: Path) -> None:
    """Tokens at k = 1..3 span less than a decade: a log axis's decade ticks would leave the token
    axis with at most one labelled tick."""
    db = tmp_path / "t.db"
    run_id = make_run(db, problems=1, n=3)
    report = _json("report", run_id, "--db", str(db), "--json", "--bootstrap", "0")["runs"][0]
    tokens = report["cost"]["by_k"]["total_tokens"]
    lo, hi = min(tokens), max(tokens)
    assert hi < 10 * lo  # less than a decade: at most one decade tick falls inside
    page = tmp_path / "r.html"
    CliRunner().invoke(app, ["report", run_id, "--db", str(db), "--html", str(page)])
    charts = re.findall(r"<svg.*?</svg>", page.read_text(), flags=re.S)
    cost = next(c for c in charts if "Coverage versus cost" in c)
    labels = _svg_x_tick_labels(cost)
    assert len(labels) >= 2, labels
    values = [float(x.replace("k", "e3").replace("M", "e6")) for x in labels]
    assert all(lo * 0.99 <= v <= hi * 1.01 for v in values), (values, lo, hi)
    # the k axes keep their labels
    coverage = next(c for c in charts if "Coverage and selection" in c)
    assert _svg_x_tick_labels(coverage)[:2] == ["1", "2"]


def test_cost_chart_against_flops_needs_a_parameter_count(tmp_path: Path) -> None:
    """`report --x flops` puts coverage and majority against FLOPs (2 x params x tokens); a model whose
    size Ponder does not know is refused with the flag that fixes it."""
    db = tmp_path / "t.db"
    run_id = make_run(db, problems=3, n=8)
    page = tmp_path / "r.html"
    refused = CliRunner().invoke(
        app, ["report", run_id, "--db", str(db), "--html", str(page), "--x", "flops"]
    )
    assert refused.exit_code == 2, refused.output
    assert "--params" in refused.output
    params = 1_000_000
    args = ["report", run_id, "--db", str(db), "--params", str(params), "--bootstrap", "0"]
    tokens = _json(*args, "--json")["runs"][0]["cost"]["by_k"]["total_tokens"]
    done = CliRunner().invoke(app, [*args, "--html", str(page), "--x", "flops"])
    assert done.exit_code == 0, done.output
    charts = re.findall(r"<svg.*?</svg>", page.read_text(), flags=re.S)
    cost = next(c for c in charts if "Coverage versus cost (flops)" in c)
    assert "FLOPs" in cost and "majority vote" in cost
    values = [float(x.replace("k", "e3").replace("M", "e6")) for x in _svg_x_tick_labels(cost)]
    lo, hi = 2 * params * min(tokens), 2 * params * max(tokens)
    assert values and all(lo * 0.99 <= v <= hi * 1.01 for v in values), (values, lo, hi)
    bad = CliRunner().invoke(app, [*args, "--html", str(page), "--x", "dollars"])
    assert bad.exit_code == 2 and "tokens or flops" in bad.output


class _LogprobBackend(ScriptedBackend):
    """A scripted model that also reports a mean token log-probability per sample."""

    async def _send(self, request):  # type: ignore[no-untyped-def]
        gen = await super()._send(request)
        completions = [
            c.model_copy(update={"mean_logprob": -0.1 * (i + 1)})
            for i, c in enumerate(gen.completions)
        ]
        return gen.model_copy(update={"completions": completions})


def test_load_run_scores_by_logprob_or_by_verifier(tmp_path: Path) -> None:
    """Best-of-k by the model's confidence must not see a verifier's partial-credit score."""
    the_task = get_task("gsm8k")
    chosen = select_problems(the_task.problems(), limit=1)
    backend = _LogprobBackend(outputs=["#### 1", "#### 2", "#### 3"], batch=3)
    with Store(tmp_path / "t.db") as store:
        rep = asyncio.run(
            sample_run(store, backend, the_task, chosen, 3, SamplingParams(max_tokens=8))
        )
        todo = store.unverified(rep.run_id, "partial", force=False)
        # the last sample is right: the verifier's score knows it, the model's confidence does not
        store.add_verdicts(
            "partial",
            [
                (
                    s.id or 0,
                    Verdict(
                        status="correct" if j == 2 else "incorrect",
                        extracted=s.text[-1],
                        score=0.5 + 0.1 * j,
                    ),
                )
                for j, (s, _) in enumerate(todo)
            ],
        )
        by = {
            source: load_run(store, rep.run_id, "partial", scores=source).problems[0].scores
            for source in ("auto", "logprob", "verifier")
        }
        with pytest.raises(UserError, match="score source"):
            load_run(store, rep.run_id, "partial", scores="nope")  # type: ignore[arg-type]
    assert by["logprob"].tolist() == pytest.approx([-0.1, -0.2, -0.3])
    assert by["verifier"].tolist() == pytest.approx([0.5, 0.6, 0.7])
    # the default never ranks by a score that knows the reference
    assert by["auto"].tolist() == by["logprob"].tolist()
    db = str(tmp_path / "t.db")
    best = {
        source: _json("report", rep.run_id, "--db", db, "--verifier", "partial", "--json",
                      "--bootstrap", "0", "--scores", source)["runs"][0]["selection"]["best_of"][-1]
        for source in ("logprob", "verifier", "auto")
    }  # fmt: skip
    assert best == {"logprob": 0.0, "verifier": 1.0, "auto": 0.0}
