"""Which sandbox runs model code here: bubblewrap, or the weaker fallback, and with what limits.

The choice is probed once per process (a real sandboxed interpreter start, ~20 ms) and cached.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from ponder.errors import ConfigError

SandboxMode = Literal["bwrap", "fallback"]
RequestedMode = Literal["auto", "bwrap", "fallback"]

ENV_VAR = "PONDER_SANDBOX"
"""Environment variable that forces a mode: ``auto`` (default), ``bwrap`` or ``fallback``."""

NOBODY = 65534
# Paths that the sandbox replaces with empty tmpfs mounts: other users' files, and the host's
# /tmp (the sandbox has its own).
_HIDDEN = ("/tmp", "/root", "/home")
_PATH = "/usr/local/bin:/usr/bin:/bin"
_PROBE_TIMEOUT_S = 30.0
_INSTALL_HINT = "install the Debian package bubblewrap (apt-get install bubblewrap)"


class SandboxUnavailableError(ConfigError):
    """The requested sandbox cannot run on this machine (the message says why, the hint what to do)."""


class SandboxWarning(RuntimeWarning):
    """Model code runs in the weaker fallback sandbox."""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one check, enforced by the kernel (rlimits, tmpfs sizes).

    Attributes:
        memory_bytes: Address space of each process (``RLIMIT_AS``); allocations beyond raise
            ``MemoryError``. Per process: a program that forks may use this once per process.
        max_processes: Processes and threads the check may add (``RLIMIT_NPROC``).
        file_bytes: Largest file, stdout and stderr included (``RLIMIT_FSIZE``).
        open_files: Open file descriptors per process (``RLIMIT_NOFILE``).
        tmpfs_bytes: Size of the sandbox's private ``/tmp`` (bubblewrap mode).
    """

    memory_bytes: int = 1 << 30
    max_processes: int = 32
    file_bytes: int = 16 << 20
    open_files: int = 256
    tmpfs_bytes: int = 128 << 20

    def __post_init__(self) -> None:
        for name in ("memory_bytes", "max_processes", "file_bytes", "open_files", "tmpfs_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"SandboxLimits.{name} must be a positive integer, got {value!r}")
        if self.memory_bytes < 64 << 20:
            raise ConfigError(
                f"SandboxLimits.memory_bytes must be at least 64 MiB (Python itself needs ~20 MiB),"
                f" got {self.memory_bytes}"
            )


@dataclass(frozen=True)
class SandboxInfo:
    """The sandbox that runs model code on this machine.

    Attributes:
        mode: ``bwrap`` (bubblewrap) or ``fallback``.
        reason: Why this mode (and, for the fallback, what is missing).
        isolation: The layers in force, in words.
    """

    mode: SandboxMode
    reason: str
    isolation: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """How to start a sandbox: the command before the interpreter, and what the zygote must do."""

    info: SandboxInfo
    prefix: tuple[str, ...]  # bwrap or unshare and their flags; () for none
    bwrap: bool
    drop_to_uid: int | None  # the zygote's uid once started (root only), else None
    uid_is_host_uid: bool  # no user namespace: RLIMIT_NPROC counts the uid's host-wide processes
    guard: bool  # install the in-process reliability guard

    def argv(
        self,
        limits: SandboxLimits,
        python: str,
        info_fd: int | None = None,
        *,
        keep: Sequence[str] = (),
    ) -> list[str]:
        """The command that starts the zygote (without ``-c SOURCE``).

        ``info_fd``: where bwrap writes the sandbox's PID (as seen from here) once it exists.
        ``keep``: directories that must stay visible (read-only) even where home directories and
        the host's ``/tmp`` are hidden, besides the interpreter's own.
        """
        argv = list(self.prefix)
        if self.bwrap:
            if info_fd is not None:
                argv[1:1] = ["--info-fd", str(info_fd)]
            argv += [
                "--perms", "1777", "--size", str(limits.tmpfs_bytes), "--tmpfs", "/tmp",
                "--perms", "1777", "--size", str(min(limits.tmpfs_bytes, 64 << 20)),
                "--tmpfs", "/dev/shm",
                "--remount-ro", "/dev",
            ]  # fmt: skip
            argv += _hide_args(python, keep)
            argv += ["--chdir", "/tmp", "--clearenv", "--setenv", "PATH", _PATH]
            argv += ["--setenv", "LANG", "C.UTF-8", "--"]
        return [*argv, python, "-I", "-S"]


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _python_dirs(python: str) -> list[str]:
    """Directories the interpreter needs: its executable's, its prefixes (the venv's and the base's)."""
    dirs = {
        os.path.dirname(python),
        os.path.dirname(os.path.realpath(python)),
        sys.prefix,
        sys.exec_prefix,
        sys.base_prefix,
        sys.base_exec_prefix,
    }
    return sorted({os.path.realpath(d) for d in dirs if d})


def _hide_args(python: str, keep: Sequence[str] = ()) -> list[str]:
    """bwrap arguments that hide home directories (and the host's /tmp) but keep Python visible."""
    home = os.path.realpath(os.path.expanduser("~"))
    hidden: list[str] = []
    for path in (*_HIDDEN, home):
        path = os.path.realpath(path)
        if path != "/" and os.path.isdir(path) and not any(_under(path, h) for h in hidden):
            hidden.append(path)
    args: list[str] = []
    for path in hidden:
        if path != "/tmp":  # mounted already, with its size limit
            args += ["--perms", "0755", "--tmpfs", path]
    visible = sorted({*_python_dirs(python), *(os.path.realpath(k) for k in keep)})
    needed = [d for d in visible if any(_under(d, h) for h in hidden)]
    kept: list[str] = []
    for d in needed:  # sorted, so a parent comes before what it contains
        if not any(_under(d, k) for k in kept):
            kept.append(d)
    for d in kept:
        root = next(h for h in hidden if _under(d, h))
        # bwrap would create the missing parents mode 0700: unreadable once the checks run as nobody.
        parts = d[len(root) :].strip("/").split("/")
        for i in range(1, len(parts)):
            args += ["--perms", "0755", "--dir", root.rstrip("/") + "/" + "/".join(parts[:i])]
        args += ["--ro-bind", d, d]
    return args


def _bwrap_prefix(
    bwrap: str, *, root: bool, disable_userns: bool = False, drop: bool = False
) -> tuple[str, ...]:
    if root:
        # No user namespace: it would map uid 0 to host root, whom the kernel exempts from
        # RLIMIT_NPROC. The zygote keeps CAP_SETUID/CAP_SETGID just long enough to become nobody.
        ns = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
        ns += ["--unshare-cgroup-try", "--cap-drop", "ALL"]
        if drop:
            ns += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        ns = ["--unshare-all", "--unshare-user"]
        if disable_userns:
            ns.append("--disable-userns")
    return (
        bwrap,
        *ns,
        "--die-with-parent",
        "--new-session",
        "--as-pid-1",
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
    )  # fmt: skip


def _probe_code(drop_to_uid: int | None) -> str:
    """What a probe runs in the sandbox: become the checks' uid, import an unloaded module."""
    code = "import os; "
    if drop_to_uid is not None:
        ids = ", ".join([str(drop_to_uid)] * 3)
        code += f"os.setgroups([]); os.setresgid({ids}); os.setresuid({ids}); "
    return code + "import json, decimal"


def _probe(argv: list[str]) -> str | None:
    """Run a probe command; None if it worked, else why not (its stderr, shortened)."""
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_PROBE_TIMEOUT_S,
            env={"PATH": _PATH, "LANG": "C.UTF-8"},
            cwd="/",
            check=False,
        )
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    except subprocess.TimeoutExpired:
        return f"it did not finish within {_PROBE_TIMEOUT_S:g} s"
    if done.returncode == 0:
        return None
    lines = [ln.strip() for ln in done.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {done.returncode}"


_RLIMITS = "rlimits (memory, CPU time, processes, file size, no core dumps)"


def _bwrap_plan(python: str) -> tuple[Plan | None, str]:
    """A working bubblewrap plan, or None and why bubblewrap cannot be used."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None, "bubblewrap (bwrap) not found on PATH"
    root = os.geteuid() == 0
    limits = SandboxLimits()
    candidates: list[tuple[tuple[str, ...], int | None, list[str]]] = []
    if root:
        dropping = _bwrap_prefix(bwrap, root=True, drop=True)
        candidates.append((dropping, NOBODY, ["uid 65534 (nobody) without capabilities"]))
        candidates.append(
            (
                _bwrap_prefix(bwrap, root=True),
                None,
                [
                    "uid 0 without capabilities (the Python installation is not readable by "
                    "nobody, so RLIMIT_NPROC is not enforced)"
                ],
            )
        )
    else:
        for disable in (True, False):
            extra = ["no nested user namespaces"] if disable else []
            candidates.append(
                (_bwrap_prefix(bwrap, root=False, disable_userns=disable), None, extra)
            )
    why = ""
    for prefix, drop, notes in candidates:
        plan = Plan(
            info=SandboxInfo("bwrap", "", ()),
            prefix=prefix,
            bwrap=True,
            drop_to_uid=drop,
            uid_is_host_uid=root,
            guard=False,
        )
        failure = _probe([*plan.argv(limits, python), "-c", _probe_code(drop)])
        if failure is None:
            isolation = (
                "bubblewrap: read-only filesystem, private /tmp, home directories hidden",
                "no network; own PID, IPC and UTS namespaces",
                *notes,
                _RLIMITS,
            )
            info = SandboxInfo("bwrap", f"bubblewrap at {bwrap}", isolation)
            return Plan(info, prefix, True, drop, root, guard=False), ""
        why = why or failure
    return None, f"bwrap cannot create its sandbox here: {why}"


def _fallback_plan(python: str, reason: str) -> Plan:
    """The best fallback this machine allows: namespaces via unshare where permitted."""
    root = os.geteuid() == 0
    layers: list[str] = []
    prefix: tuple[str, ...] = ()
    unshare = shutil.which("unshare")
    if unshare is not None:
        common = ("--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child")
        flags = common if root else ("--user", "--map-root-user", *common)
        failure = _probe([unshare, *flags, python, "-I", "-S", "-c", _probe_code(None)])
        if failure is None:
            prefix = (unshare, *flags)
            layers.append("no network; own PID, IPC and UTS namespaces (unshare)")
        else:
            layers.append(f"no namespaces (unshare failed: {failure})")
    else:
        layers.append("no namespaces (unshare not found)")
    drop = None
    if root:
        # As nobody, the checks cannot write root's files and RLIMIT_NPROC holds; but then Python
        # must be readable by nobody (not so for an installation under /root).
        failure = _probe([python, "-I", "-S", "-c", _probe_code(NOBODY)])
        if failure is None:
            drop = NOBODY
            layers.append("uid 65534 (nobody)")
        else:
            layers.append(
                "uid 0: the Python installation is not readable by uid 65534, so the checks run "
                "as root (RLIMIT_NPROC does not hold for root)"
            )
    layers.append(_RLIMITS)
    layers.append(
        "in-process guard (no processes, signals, sockets or file changes outside the check's "
        "directory)"
    )
    info = SandboxInfo("fallback", f"{reason}; no filesystem isolation", tuple(layers))
    return Plan(
        info,
        prefix,
        bwrap=False,
        drop_to_uid=drop,
        uid_is_host_uid=not prefix or root,
        guard=True,
    )


def requested_mode(mode: str | None = None) -> RequestedMode:
    """``mode`` if given, else ``$PONDER_SANDBOX``, else ``auto``; validated."""
    source = f"mode={mode!r}"
    if mode is None:
        mode = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
        source = f"{ENV_VAR}={mode}"
    valid = get_args(RequestedMode)
    if mode not in valid:
        raise ConfigError(f"unknown sandbox mode {source}", hint=f"use one of: {', '.join(valid)}")
    return mode  # type: ignore[return-value]  # checked against the Literal's values above


@functools.cache
def _plan(requested: RequestedMode, python: str) -> Plan:
    if requested == "fallback":
        return _fallback_plan(python, "the fallback sandbox was requested")
    plan, why = _bwrap_plan(python)
    if plan is not None:
        return plan
    if requested == "bwrap":
        raise SandboxUnavailableError(
            f"the bubblewrap sandbox was requested but cannot run: {why}",
            hint=(
                f"{_INSTALL_HINT}; as a non-root user bubblewrap also needs unprivileged user "
                "namespaces (sysctl kernel.unprivileged_userns_clone=1, "
                "user.max_user_namespaces > 0); or use the weaker fallback: "
                f"{ENV_VAR}=fallback"
            ),
        )
    fallback = _fallback_plan(python, why)
    warnings.warn(
        f"{why}: code runs without filesystem isolation; {_INSTALL_HINT}. Fallback sandbox: "
        + "; ".join(fallback.info.isolation),
        SandboxWarning,
        stacklevel=4,
    )
    return fallback


def sandbox_plan(mode: str | None = None, python: str | None = None) -> Plan:
    """The plan for ``mode`` (see :func:`requested_mode`), probed once per process."""
    return _plan(requested_mode(mode), python or sys.executable)


def sandbox_mode(mode: str | None = None) -> SandboxInfo:
    """Which sandbox runs model code here, why, and with which layers of isolation.

    Args:
        mode: ``auto`` (bubblewrap when it works, else the fallback, with a warning), ``bwrap``
            or ``fallback``; defaults to ``$PONDER_SANDBOX``, else ``auto``.

    Raises:
        SandboxUnavailableError: ``bwrap`` was requested and bubblewrap cannot run here.
        ConfigError: an unknown mode.
    """
    return sandbox_plan(mode).info
