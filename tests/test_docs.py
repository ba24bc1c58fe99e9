"""Every fenced command in the README and docs/ runs, through the real entry point, on the real embedded model.

Each page is one test: its ``bash`` and ``python`` blocks run in order in a fresh folder (with ``configs/`` linked
in and ``$PONDER_DB`` pointing into it), so a page's later commands see the runs its earlier ones made. A block
preceded by ``<!-- not run: REASON -->`` is skipped, and the reason must be given. Blocks in other languages
(yaml, json, text) are data, not commands; one preceded by ``<!-- file: NAME -->`` is written to ``NAME`` in that
folder, as a reader would save it, before the blocks after it run.

So that a page runs in seconds rather than minutes, commands are changed the way a reader trying them quickly would
change them, and only that way:

* ``.venv/bin/ponder`` is this environment's ``ponder``, and ``.venv/bin/python`` its python;
* every registered model name is replaced by ``smollm2-135m`` (the test model), and ``ponder sample`` / ``ponder
  run`` get ``--model smollm2-135m`` when they name no model, ``--limit`` at most 2 and ``--max-tokens`` at
  most 48 (``run``: a cap on every model call of the system), and ``sample`` at most 4 samples;
* ``--base-url`` points at a real llama.cpp server on 127.0.0.1 (the ``llama_server`` fixture);
* the word ``RUN`` (in bash) or the string ``"RUN"`` (in python) is the id of the run made last on that page
  (for ``ponder trace``, the system run made last).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ponder.models import model_names

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TEST_MODEL = "smollm2-135m"
_NOT_RUN = re.compile(r"<!--\s*not run:\s*(.*?)\s*-->", re.S)
_FILE = re.compile(r"<!--\s*file:\s*(\S+)\s*-->")
_FENCE = re.compile(r"^```(\w*)\s*$")

pytestmark = [pytest.mark.embedded, pytest.mark.slow]


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    code: str
    not_run: str | None
    file: str | None = None


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a markdown page, with the reason they are not run (if marked)."""
    out: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        before = lines[k] if k >= 0 else ""
        marker, file = _NOT_RUN.search(before), _FILE.search(before)
        out.append(
            Block(
                path.name,
                start + 1,
                lang,
                "\n".join(lines[start + 1 : j]),
                marker.group(1) if marker else None,
                file.group(1) if file else None,
            )
        )
        i = j + 1
    return out


def commands(code: str) -> list[str]:
    """Logical shell commands of a bash block: continuations joined, comment-only and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [line for line in joined.splitlines() if shlex.split(line, comments=True)]


def _set_option(words: list[str], flag: str, value: str, *, at_most: int | None = None) -> None:
    if flag in words:
        i = words.index(flag)
        if at_most is None or int(words[i + 1]) > at_most:
            words[i + 1] = value
    else:
        words += [flag, value]


def adapt(command: str, *, run_id: str | None, base_url: str) -> list[str]:
    """One documented shell command, changed as the module docstring says."""
    words = shlex.split(command, comments=True)
    models = set(model_names())
    words = [TEST_MODEL if w in models else w for w in words]
    words = [re.sub("|".join(map(re.escape, sorted(models))), TEST_MODEL, w) for w in words]
    if words[0] in (".venv/bin/ponder", "ponder"):
        words[0] = str(BIN / "ponder")
    elif words[0] == ".venv/bin/python":
        words[0] = sys.executable
    if "RUN" in words:
        assert run_id is not None, f"{command!r} names RUN before the page made a run"
        words = [run_id if w == "RUN" else w for w in words]
    if "--base-url" in words:
        words[words.index("--base-url") + 1] = base_url
    if len(words) > 1 and Path(words[0]).name == "ponder" and words[1] in ("sample", "run"):
        if "--model" not in words and "-m" not in words and "--base-url" not in words:
            words += ["--model", TEST_MODEL]
        _set_option(words, "--limit", "2", at_most=2)
        _set_option(words, "--max-tokens", "48", at_most=48)
        if words[1] == "sample":
            _set_option(words, "--n", "4", at_most=4)
    return words


def _latest_run(env: dict[str, str], cwd: Path, *, system: bool = False) -> str | None:
    out = subprocess.run(
        [str(BIN / "ponder"), "runs", "--json"], capture_output=True, text=True, env=env, cwd=cwd
    )
    if out.returncode != 0:
        return None
    runs = [r for r in json.loads(out.stdout) if not system or r["model"].startswith("system:")]
    return max(runs, key=lambda r: r["created_at"])["id"] if runs else None


def test_every_not_run_marker_has_a_reason() -> None:
    for page in PAGES:
        for block in blocks(page):
            if block.not_run is not None:
                assert block.not_run.strip(), f"{page.name}:{block.line}: 'not run' needs a reason"


def test_docs_link_only_to_existing_pages() -> None:
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def _runnable(block: Block) -> bool:
    return block.file is None and block.not_run is None and block.lang in ("bash", "python")


# Pages whose every block is marked not run (benchmarks, hour-long experiments) have nothing to run;
# test_every_not_run_marker_has_a_reason still checks them.
RUNNABLE_PAGES = [p for p in PAGES if any(_runnable(b) for b in blocks(p))]


@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=[p.name for p in RUNNABLE_PAGES])
def test_documented_commands_run(page: Path, tmp_path: Path, llama_server: str) -> None:
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    env = {
        **os.environ,
        "PONDER_DB": str(tmp_path / "ponder.db"),
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    env.pop("OPENAI_API_KEY", None)
    ran = 0
    for block in blocks(page):
        where = f"{page.name}:{block.line}"
        if block.file is not None:
            (tmp_path / block.file).write_text(block.code + "\n")
            continue
        if block.not_run is not None or block.lang not in ("bash", "python"):
            continue
        if block.lang == "python":
            code = block.code
            if '"RUN"' in code:
                code = code.replace('"RUN"', repr(_latest_run(env, tmp_path) or "RUN"))
            for name in model_names():
                code = code.replace(f'"{name}"', f'"{TEST_MODEL}"')
            result = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                env=env,
                cwd=tmp_path,
                timeout=300,
            )
            assert result.returncode == 0, f"{where}: python block failed\n{result.stderr[-3000:]}"
            ran += 1
            continue
        for command in commands(block.code):
            if command.startswith("export "):
                name, _, value = command.removeprefix("export ").partition("=")
                env[name] = value.strip("'\"")
                continue
            # `ponder trace RUN` means the system run, not the baseline made after it.
            run_id = None
            if re.search(r"\bRUN\b", command):
                run_id = _latest_run(env, tmp_path, system=" trace " in f" {command} ")
            words = adapt(command, run_id=run_id, base_url=llama_server)
            if Path(words[0]).name not in ("ponder", "python"):
                words = ["bash", "-c", command]  # a shell line as written: redirections, pipes
            result = subprocess.run(
                words, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
            )
            assert result.returncode == 0, (
                f"{where}: {shlex.join(words)} exited {result.returncode}\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
            )
            ran += 1
    assert ran > 0, f"{page.name}: no block ran"
