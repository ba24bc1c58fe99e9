"""`--executor` on the command line without a cluster: the local Ray that `ponder` starts (and
stops), and the errors of a wrong executor, a missing Ray, or an unreachable cluster."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PONDER = str(ROOT / ".venv" / "bin" / "ponder")
SAMPLE = ["sample", "--backend", "scripted", "--task", "gsm8k", "--limit", "2", "--n", "4"]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), **extra}


def _pids_naming(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_a_local_ray_is_started_on_loopback_for_the_command_and_shut_down_after(
    tmp_path: Path,
) -> None:
    # Ray puts its session (and names it on every process it starts) under RAY_TMPDIR.
    temp = tempfile.mkdtemp(prefix="prl", dir="/tmp")
    db = tmp_path / "l.db"
    try:
        done = subprocess.run(
            [PONDER, *SAMPLE, "--executor", "ray", "--ray-actors", "2", "--db", str(db), "--json"],
            env=_env(RAY_TMPDIR=temp),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)  # stdout is the JSON alone, whatever Ray printed
        assert out["sampling"]["drawn"] == 8
        with sqlite3.connect(db) as con:
            nodes = {r[0] for r in con.execute("SELECT node FROM samples")}
        assert len(nodes) == 1 and next(iter(nodes)).startswith("127.0.0.1/")
        deadline = time.monotonic() + 15
        while _pids_naming(temp) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _pids_naming(temp), "the local Ray outlived the command"
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_ray_address_fails_fast_naming_it(tmp_path: Path) -> None:
    address = f"127.0.0.1:{_free_port()}"
    start = time.monotonic()
    done = subprocess.run(
        [
            PONDER,
            *SAMPLE,
            "--executor",
            "ray",
            "--ray-address",
            address,
            "--db",
            str(tmp_path / "u"),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.monotonic() - start < 30
    assert done.returncode == 1
    assert f"no Ray cluster reachable at {address}" in done.stderr
    assert "ray start --head" in done.stderr


def test_ray_flags_without_the_ray_executor_are_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [PONDER, *SAMPLE, "--ray-address", "127.0.0.1:6379", "--db", str(tmp_path / "x.db")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--ray-address only apply to --executor ray" in done.stderr


@pytest.mark.parametrize("command", ["sample", "verify", "run", "search"])
def test_every_command_that_draws_or_verifies_takes_the_executor(command: str) -> None:
    from typer.testing import CliRunner

    from ponder.cli import app

    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in ("--executor", "--ray-address", "--ray-actors"):
        assert flag in result.output


def test_without_ray_the_ray_executor_says_how_to_install_it(tmp_path: Path) -> None:
    # `ray` made unimportable, as on a machine without the extra.
    code = (
        "import sys; sys.modules['ray'] = None; from ponder.cli import main; "
        f"sys.argv = ['ponder', *{SAMPLE!r}, '--executor', 'ray', '--db', {str(tmp_path / 'n')!r}]; "
        "main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "--executor ray needs Ray" in done.stderr
    assert "pip install 'ponder[ray]'" in done.stderr


def test_an_unknown_executor_lists_the_known_ones(tmp_path: Path) -> None:
    done = subprocess.run(
        [PONDER, *SAMPLE, "--executor", "rey", "--db", str(tmp_path / "k.db")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "local" in done.stderr and "ray" in done.stderr


_LOCAL_DRIVER = """
import asyncio, sys
from ponder.backends import ScriptedConfig
from ponder.executors import create_executor, executor_config_type
from ponder.records import SamplingParams
from ponder.runs import sample_run
from ponder.store import Store
from ponder.tasks import get_task

if __name__ == "__main__":
    with create_executor(executor_config_type("ray")(actors=2, local_cpus=2)) as ex:
        backend = ex.backend(ScriptedConfig(choices=["#### 1", "#### 2"], delay_s=0.2, max_batch=2))
        task = get_task("gsm8k")

        async def go():
            try:
                return await sample_run(
                    Store(sys.argv[1]), backend, task, task.problems()[:4], 8,
                    SamplingParams(max_tokens=8, seed=5), batch=2,
                )
            finally:
                await backend.aclose()

        report = asyncio.run(go())
    print(report.drawn, report.already_present)
"""


def _stored(db: Path) -> int:
    try:
        with sqlite3.connect(db) as con:
            return int(con.execute("SELECT COUNT(*) FROM samples").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_a_killed_driver_that_started_a_local_ray_resumes_beside_its_leftovers(
    tmp_path: Path,
) -> None:
    temp = tempfile.mkdtemp(prefix="prk", dir="/tmp")
    script, db = tmp_path / "driver.py", tmp_path / "k.db"
    script.write_text(_LOCAL_DRIVER)
    args, env = [sys.executable, str(script), str(db)], _env(RAY_TMPDIR=temp)
    try:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and _stored(db) < 8:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        proc.kill()  # SIGKILL: no chance to shut its local Ray down
        proc.wait()
        before = _stored(db)
        assert 8 <= before < 32
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        drawn, present = map(int, done.stdout.split())
        assert (present, drawn) == (before, 32 - before)
        with sqlite3.connect(db) as con:
            keys = con.execute("SELECT problem_id, idx FROM samples").fetchall()
        assert len(keys) == len(set(keys)) == 32
    finally:
        for pid in _pids_naming(temp):
            try:
                os.kill(pid, 9)
            except OSError:
                continue
        shutil.rmtree(temp, ignore_errors=True)
