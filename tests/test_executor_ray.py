"""The Ray executor on a real multi-node Ray cluster on this machine (loopback only).

One cluster for the module: a head with no CPUs for work and two worker nodes with one CPU each,
a small object store, no dashboard, every node on 127.0.0.1 (asserted, sockets included). The
driver (this process, or a `ponder` subprocess) alone writes the store; the tests check that a
run on Ray is the same run as a local one, and that a lost actor or node costs no sample and
duplicates none.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Before Ray is imported: every node started from this process registers as 127.0.0.1, not as
# the machine's external interface (which Ray picks otherwise, even when told 127.0.0.1).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import ray
from ray.cluster_utils import Cluster

from ponder.backends import LlamaCppConfig, ScriptedConfig
from ponder.executors import (
    Executor,
    LocalExecutor,
    create_executor,
    executor_config_type,
)
from ponder.records import Sample, SamplingParams
from ponder.runs import sample_run
from ponder.store import Store
from ponder.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
PONDER = ROOT / ".venv" / "bin" / "ponder"
STORE_MB = 80 * 2**20
CHOICES = ["#### 18", "#### 3", "The answer is 18.", "#### 70000", "no idea"]


def _ray_pids(marker: str) -> list[int]:
    """Processes whose command line names ``marker`` (the cluster's temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmd:
            pids.append(int(entry.name))
    return pids


def _listening(pids: list[int]) -> set[str]:
    """Local addresses (IP:port) of the TCP sockets ``pids`` listen on, from /proc."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            hexip, hexport = fields[1].split(":")
            raw = bytes.fromhex(hexip)
            # /proc prints each 32-bit word in host (little-endian) order.
            ip = b"".join(raw[i : i + 4][::-1] for i in range(0, width // 2, 4))
            if len(ip) == 4:
                addr = ".".join(str(b) for b in ip)
            elif ip[:12] == b"\0" * 10 + b"\xff\xff":  # IPv4-mapped IPv6
                addr = ".".join(str(b) for b in ip[12:])
            else:
                addr = ip.hex()
            found.add(f"{addr}:{int(hexport, 16)}")
    return found


class _Cluster:
    def __init__(self) -> None:
        self.temp = tempfile.mkdtemp(prefix="pray", dir="/tmp")
        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "node_ip_address": "127.0.0.1",
                "num_cpus": 0,
                "include_dashboard": False,
                "object_store_memory": STORE_MB,
                "temp_dir": self.temp,
            },
        )
        self.workers = [self.add_worker() for _ in range(2)]

    def add_worker(self) -> Any:
        node = self.cluster.add_node(
            num_cpus=1, node_ip_address="127.0.0.1", object_store_memory=STORE_MB
        )
        self.cluster.wait_for_nodes()
        return node

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def executor(self, **options: Any) -> Executor:
        config = executor_config_type("ray")(address=self.address, **options)
        return create_executor(config)


@pytest.fixture(scope="module")
def cluster() -> Iterator[_Cluster]:
    c = _Cluster()
    try:
        yield c
    finally:
        ray.shutdown()
        c.cluster.shutdown()
        deadline = time.monotonic() + 20
        while _ray_pids(c.temp) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _ray_pids(c.temp)
        shutil.rmtree(c.temp, ignore_errors=True)
        assert not left, f"Ray processes left running: {left}"


def _problems(k: int) -> list[Any]:
    return get_task("gsm8k").problems()[:k]


def _by_key(samples: list[Sample]) -> dict[tuple[str, int], Sample]:
    return {(s.problem_id, s.index): s for s in samples}


def _requests(samples: list[Sample]) -> Counter[tuple[str, int]]:
    """The requests that drew ``samples``: (problem, seed) -> samples drawn in it."""
    return Counter((s.problem_id, s.seed) for s in samples)


def _sample(
    store: Store, backend: Any, problems: list[Any], n: int, **kwargs: Any
) -> tuple[Any, list[Sample]]:
    params = SamplingParams(max_tokens=32, temperature=0.7, seed=11)

    async def go() -> Any:
        try:
            return await sample_run(
                store, backend, get_task("gsm8k"), problems, n, params, **kwargs
            )
        finally:
            await backend.aclose()

    report = asyncio.run(go())
    return report, store.samples(report.run_id)


def test_every_node_and_listening_socket_is_on_loopback(cluster: _Cluster) -> None:
    with cluster.executor():
        nodes = [n for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == 3
    assert {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}
    assert sorted(n["Resources"].get("CPU", 0) for n in nodes) == [0, 1, 1]
    sockets = _listening(_ray_pids(cluster.temp))
    assert sockets, "found no listening socket of the cluster's processes"
    assert {s.rsplit(":", 1)[0] for s in sockets} == {"127.0.0.1"}, sockets


def test_a_scripted_run_on_ray_is_the_local_run_sample_for_sample(
    cluster: _Cluster, tmp_path: Path
) -> None:
    config = ScriptedConfig(choices=CHOICES, delay_s=0.05, max_batch=4)
    problems = _problems(6)
    with LocalExecutor() as local:
        report_a, local_samples = _sample(
            Store(tmp_path / "a.db"), local.backend(config), problems, 8
        )
    with cluster.executor() as ex:
        backend = ex.backend(config)
        assert backend.request_slots == 2  # one actor per worker node
        # Each actor's engine would use the CPUs its node gives Ray (1 here).
        assert [i["threads"] for i in ray.get([a.info.remote() for a in backend.actors])] == [1, 1]
        report_b, ray_samples = _sample(Store(tmp_path / "b.db"), backend, problems, 8)
    assert report_a.run_id == report_b.run_id
    assert report_b.drawn == 48
    fields = ("text", "seed", "finish_reason", "completion_tokens", "prompt_tokens")
    a, b = _by_key(local_samples), _by_key(ray_samples)
    assert a.keys() == b.keys() and len(a) == 48
    for key in a:
        assert [getattr(a[key], f) for f in fields] == [getattr(b[key], f) for f in fields]
    # The same requests: each (problem, seed) drew the same samples in both runs.
    assert _requests(local_samples) == _requests(ray_samples)
    assert {s.node for s in local_samples} == {None}
    assert len({s.node for s in ray_samples}) == 2  # both workers drew samples


def _count(db: Path) -> int:
    with sqlite3.connect(db) as con:
        return int(con.execute("SELECT COUNT(*) FROM samples").fetchone()[0])


def _exactly_once(samples: list[Sample], problems: list[Any], n: int) -> None:
    keys = [(s.problem_id, s.index) for s in samples]
    assert len(keys) == len(set(keys))
    assert set(keys) == {(p.id, i) for p in problems for i in range(n)}


def test_an_actor_killed_mid_run_costs_no_sample_and_duplicates_none(
    cluster: _Cluster, tmp_path: Path
) -> None:
    config = ScriptedConfig(choices=CHOICES, delay_s=0.25, max_batch=2)
    problems = _problems(8)
    with cluster.executor() as ex:
        backend = ex.backend(config)
        infos = ray.get([a.info.remote() for a in backend.actors])
        victim: int | None = infos[0]["pid"]
        drawn = 0

        def on_progress(k: int, _tokens: int) -> None:
            nonlocal drawn, victim
            drawn += k
            if drawn >= 8 and victim is not None:
                os.kill(victim, signal.SIGKILL)
                victim = None

        _, samples = _sample(
            Store(tmp_path / "k.db"), backend, problems, 8, batch=2, on_progress=on_progress
        )
        assert backend.lost >= 1  # the killed actor's request went to another one
    _exactly_once(samples, problems, 8)
    assert len({s.node for s in samples}) == 2


def test_stored_samples_are_never_overwritten_by_a_replayed_unit(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    from ponder.store import RunSpec

    run = store.ensure_run(RunSpec(model="scripted:x", task={"name": "t"}, params=SamplingParams()))
    first = Sample(
        run_id=run.id,
        problem_id="p",
        index=0,
        text="first",
        finish_reason="stop",
        completion_tokens=1,
        prompt_tokens=1,
        latency_s=0.1,
        seed=1,
        node="a",
    )
    owner = store.register_owner()
    assert len(store.add_samples([first], owner=owner)) == 1
    replay = first.model_copy(update={"text": "second", "node": "b"})
    assert store.add_samples([replay], owner=owner) == []
    (kept,) = store.samples(run.id)
    assert (kept.text, kept.node) == ("first", "a")


@pytest.mark.embedded
def test_the_embedded_model_on_ray_draws_what_it_draws_locally(
    cluster: _Cluster, tmp_path: Path
) -> None:
    # One request at a time on both sides: concurrent requests change llama.cpp's batches.
    config = LlamaCppConfig(model="smollm2-135m", n_parallel=2, ctx_per_sequence=512)
    problems = _problems(2)
    with LocalExecutor() as local:
        _, local_samples = _sample(
            Store(tmp_path / "a.db"), local.backend(config), problems, 2, concurrency=1
        )
    with cluster.executor() as ex:
        _, ray_samples = _sample(
            Store(tmp_path / "b.db"), ex.backend(config), problems, 2, concurrency=1
        )
    a, b = _by_key(local_samples), _by_key(ray_samples)
    assert a.keys() == b.keys() and len(a) == 4
    assert [a[k].text for k in a] == [b[k].text for k in a]
    assert all(s.text.strip() for s in ray_samples)
    assert {s.node for s in ray_samples} <= {f"127.0.0.1/{n}" for n in _node_ids()}


def _node_ids() -> set[str]:
    return {n["NodeID"][:8] for n in ray.nodes()}


def test_code_is_verified_in_ray_tasks_with_the_local_verdicts(cluster: _Cluster) -> None:
    from ponder.verify import make_verifier
    from ponder.verify.code import CodeReference

    ref = CodeReference(
        prompt="def add(a, b):\n",
        test="def check(candidate):\n    assert candidate(2, 3) == 5\n",
        entry_point="add",
    ).to_json()
    items: list[tuple[str | None, str]] = [
        (ref, "```python\ndef add(a, b):\n    return a + b\n```"),
        (ref, "```python\ndef add(a, b):\n    return a - b\n```"),
    ] * 3
    with cluster.executor() as ex, ex.verifier("code") as remote:
        verdicts = remote.verify_many(items)
    with make_verifier("code") as local:
        expected = local.verify_many(items)
        assert remote.name == local.name
    assert [v.status for v in verdicts] == [v.status for v in expected]
    assert [v.status for v in verdicts[:2]] == ["correct", "incorrect"]


_DRIVER = textwrap.dedent(
    """
    import asyncio, sys
    from ponder.backends import ScriptedConfig
    from ponder.executors import create_executor, executor_config_type
    from ponder.records import SamplingParams
    from ponder.runs import sample_run
    from ponder.store import Store
    from ponder.tasks import get_task

    if __name__ == "__main__":
        address, db = sys.argv[1], sys.argv[2]
        config = executor_config_type("ray")(address=address)
        with create_executor(config) as ex:
            backend = ex.backend(ScriptedConfig(choices=["#### 1", "#### 2"], delay_s=0.2, max_batch=2))
            task = get_task("gsm8k")

            async def go():
                try:
                    return await sample_run(
                        Store(db), backend, task, task.problems()[:6], 8,
                        SamplingParams(max_tokens=8, seed=5), batch=2,
                    )
                finally:
                    await backend.aclose()

            report = asyncio.run(go())
        print(report.drawn, report.already_present)
    """
)


def test_a_driver_killed_with_sigkill_resumes_on_rerun(cluster: _Cluster, tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    db = tmp_path / "d.db"
    args = [sys.executable, str(script), cluster.address, str(db)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (not db.exists() or _count_safe(db) < 8):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    before = _count(db)
    assert 8 <= before < 48
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    drawn, present = map(int, done.stdout.split())
    assert present == before and drawn == 48 - before
    store = Store(db)
    (run,) = store.runs()
    _exactly_once(store.samples(run.id), get_task("gsm8k").problems()[:6], 8)


def _count_safe(db: Path) -> int:
    try:
        return _count(db)
    except sqlite3.Error:
        return 0


def test_sample_cli_on_ray_prints_valid_json_and_records_nodes(
    cluster: _Cluster, tmp_path: Path
) -> None:
    db = tmp_path / "c.db"
    cmd = [
        str(PONDER),
        "sample",
        "--backend",
        "scripted",
        "--task",
        "gsm8k",
        "--limit",
        "3",
        "--n",
        "4",
        "--executor",
        "ray",
        "--ray-address",
        cluster.address,
        "--db",
        str(db),
        "--json",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["sampling"]["drawn"] == 12
    assert out["verification"]["checked"] == 12
    with sqlite3.connect(db) as con:
        nodes = {r[0] for r in con.execute("SELECT node FROM samples")}
    assert nodes and None not in nodes


QUESTIONS = [("What is 1+1?", "2"), ("What is 1+2?", "3"), ("What is 2+2?", "4"), ("4-2?", "2")]
SEEDED = {"backend": "scripted", "name": "seeded", "choices": ["#### 2", "#### 3", "#### 4"]}


def _cli(*args: str) -> dict[str, Any]:
    from typer.testing import CliRunner

    from ponder.cli import app

    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def test_ponder_run_and_search_on_ray_are_the_local_runs(cluster: _Cluster, tmp_path: Path) -> None:
    import yaml

    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in QUESTIONS))
    system = tmp_path / "sys.yaml"
    system.write_text(
        yaml.safe_dump(
            {
                "name": "seeded-vote",
                "model": SEEDED,
                "layers": [{"type": "generate", "n": 3, "max_tokens": 8}, {"type": "vote"}],
            }
        )
    )
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "name": "ray",
                "generate": {"models": [SEEDED], "n": [1, 3], "max_tokens": 8},
                "layers": [{"type": "vote"}],
            }
        )
    )
    ray_flags = ["--executor", "ray", "--ray-address", cluster.address]
    runs, searches = [], []
    for name, flags in (("local", []), ("ray", ray_flags)):
        db = tmp_path / f"{name}.db"
        run = ["run", "--system", str(system), "--task", "jsonl", "--data", str(data)]
        runs.append(_cli(*run, "--db", str(db), "--json", *flags))
        search = ["search", str(space), "--task", "jsonl", "--data", str(data), "--dev", "3"]
        search += ["--test", "1", "--trials", "2", "--algorithm", "grid", "--top", "1"]
        searches.append(_cli(*search, "--db", str(tmp_path / f"s{name}.db"), "--json", *flags))
    local, remote = runs
    assert local["system"]["run"] == remote["system"]["run"]
    assert local["system"]["accuracy"] == remote["system"]["accuracy"]
    assert local["baseline"]["accuracy"] == remote["baseline"]["accuracy"]
    texts = []
    for name in ("local", "ray"):
        store = Store(tmp_path / f"{name}.db")
        texts.append([(s.problem_id, s.text) for s in store.samples(local["system"]["run"])])
    assert texts[0] == texts[1] and len(texts[0]) == 4

    def trials(out: dict[str, Any]) -> list[tuple[Any, ...]]:
        keys = ("params", "run_id", "accuracy", "tokens_per_query")
        return [tuple(t[k] for k in keys) for t in out["trials"]]

    def tests(out: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [(t["label"], t["accuracy"], t["tokens_per_query"]) for t in out["tests"]]

    assert trials(searches[0]) == trials(searches[1]) and len(searches[0]["trials"]) == 2
    assert tests(searches[0]) == tests(searches[1]) and tests(searches[0])


def test_a_worker_node_lost_mid_run_costs_no_sample_and_duplicates_none(
    cluster: _Cluster, tmp_path: Path
) -> None:
    # Last in the module: it takes a worker away for good.
    config = ScriptedConfig(choices=CHOICES, delay_s=0.2, max_batch=2)
    problems = _problems(6)
    victim = cluster.workers[0]
    with cluster.executor() as ex:
        backend = ex.backend(config)
        drawn = 0

        def on_progress(k: int, _tokens: int) -> None:
            nonlocal drawn
            drawn += k
            if drawn >= 6 and victim in cluster.workers:
                cluster.workers.remove(victim)
                cluster.cluster.remove_node(victim, allow_graceful=False)

        _, samples = _sample(
            Store(tmp_path / "n.db"), backend, problems, 8, batch=2, on_progress=on_progress
        )
        assert backend.lost >= 1
    _exactly_once(samples, problems, 8)
    assert len({s.node for s in samples}) == 2  # the lost node drew some before it went
