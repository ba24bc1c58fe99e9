"""`ponder report`: terminal, JSON, self-contained HTML (checked in headless Chromium), plots."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ponder.backends import ScriptedBackend
from ponder.cli import app
from ponder.records import SamplingParams
from ponder.runs import sample_run, verify_run
from ponder.store import Store
from ponder.tasks import get_task, select_problems
from ponder.verify import MathVerifier


def make_run(
    db: Path, *, problems: int = 6, n: int = 16, seed: int = 0, task: str = "gsm8k"
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


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    run_id = make_run(db)
    html_path = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", run_id, "--db", str(db), "--html", str(html_path)])
    assert result.exit_code == 0, result.output
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        ["chromium", *flags, "--dump-dom", html_path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert dom.count("<svg") >= 3 and "Scaling law" in dom and "gsm8k/5" in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        ["chromium", *flags, f"--screenshot={shot}", "--window-size=1200,2400", html_path.as_uri()],
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
