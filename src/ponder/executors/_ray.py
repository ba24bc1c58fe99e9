"""The Ray executor: backends on actors of a Ray cluster, verification as Ray tasks.

Each backend a driver asks for becomes a pool of actors (:class:`RayBackend`), each owning that
backend (an embedded engine, or a client of a server on its node). A request goes to one idle actor
at a time; its completions come back to the driver, which alone writes the store. An actor that
dies mid-request (its process killed, its node lost) costs nothing but time: the request goes to
another actor, and the dead one rejoins the pool if Ray restarts it.

Connecting: ``address`` names a running cluster's head (``HOST:PORT`` as ``ray start --head``
prints, or ``auto``). Without one, a local Ray is started for the run, bound to 127.0.0.1 only,
and shut down at the end.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ponder.errors import ConfigError, RunError
from ponder.executors._base import Executor, register_executor

if TYPE_CHECKING:
    from ponder.backends import Backend
    from ponder.verify import Verifier

logger = logging.getLogger(__name__)

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray reads this at import: when false, a node's own address is 127.0.0.1 instead of the address
of the machine's external interface (which Ray otherwise registers even when told 127.0.0.1)."""

INSTALL_HINT = "install it with: pip install 'ponder[ray]'"


class RayConfig(BaseModel):
    """Config of the Ray executor."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["ray"] = "ray"
    address: str | None = Field(
        None,
        description="The head of a running cluster (HOST:PORT, or 'auto'); None: start a local "
        "Ray on 127.0.0.1 for this run.",
    )
    actors: int | None = Field(
        None,
        ge=1,
        description="Actors per backend; None: one per node that has CPUs, each using all of them "
        "as engine threads.",
    )
    cpus_per_actor: float = Field(
        1.0, gt=0, description="With `actors`: the CPUs each actor takes (its engine threads)."
    )
    local_cpus: int | None = Field(
        None, ge=1, description="CPUs of a local Ray started for the run (default: every core)."
    )
    connect_timeout_s: float = Field(
        30.0, gt=0, description="How long to try reaching `address` before failing."
    )
    lost_wait_s: float = Field(
        60.0,
        gt=0,
        description="How long a request waits for a lost actor to come back when no other is left.",
    )


def import_ray(*, loopback: bool) -> Any:
    """Import Ray (with ``loopback``: keeping every address of a node started here on 127.0.0.1).

    Raises:
        ConfigError: Ray is not installed.
    """
    if loopback:
        os.environ[LOOPBACK_ENV] = "0"  # node processes started from here inherit it
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--executor ray needs Ray, which is not installed", hint=INSTALL_HINT
        ) from None
    if loopback:
        # Imported earlier, Ray read the variable then; what it reads it looks up here at call time.
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
    _messages_to_stderr()
    return ray


def _messages_to_stderr() -> None:
    """Send what Ray prints about its workers (e.g. "a worker died") to stderr, never stdout.

    A driver prints the cluster's error messages from a background thread at any moment, to
    stdout; stdout is the command's output (``--json``). The hook is Ray's module-level printer,
    looked up at each call; if a Ray release renames it, nothing changes but where they go.
    """
    from ray._private import worker

    printer = getattr(worker, "print_to_stdstream", None)
    if printer is None or getattr(printer, "_ponder", False):
        return

    def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
        printer({**data, "is_err": True}, ignore_prefix)

    to_stderr._ponder = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


def _host_port(address: str) -> tuple[str, int]:
    rest = address.split("://", 1)[-1]
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(
            f"--ray-address {address!r} is not HOST:PORT",
            hint="give the head's address as `ray start --head` prints it, e.g. 10.0.0.5:6379",
        )
    return host.strip("[]") or "127.0.0.1", int(port)


def probe(address: str, timeout_s: float) -> None:
    """Fail fast (within ``timeout_s``) when nothing listens at ``address``: ``ray.init`` would
    retry a dead address for minutes.

    Raises:
        RunError: nothing accepted a connection at the address in time.
    """
    host, port = _host_port(address)
    deadline = time.monotonic() + timeout_s
    refused_until = time.monotonic() + min(5.0, timeout_s)
    last: OSError | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            socket.create_connection((host, port), timeout=min(5.0, left)).close()
            return
        except OSError as exc:
            last = exc
        # A refused connection is an answer (nothing listens): retry briefly, for a head
        # that is starting; a timeout may be a slow network: retry until the deadline.
        if isinstance(last, ConnectionRefusedError) and time.monotonic() > refused_until:
            break
        time.sleep(0.5)
    raise RunError(
        f"no Ray cluster reachable at {address}: {last}",
        hint="start one there (`ray start --head`), check the address and port, or drop "
        "--ray-address to run on a local Ray",
    )


def _init_within(ray: Any, timeout_s: float, address: str, **kwargs: Any) -> None:
    """``ray.init`` that gives up after ``timeout_s`` (it has no timeout of its own)."""
    failure: list[Exception] = []

    def connect() -> None:
        try:
            ray.init(address=address, **kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            failure.append(exc)

    thread = threading.Thread(target=connect, name="ponder-ray-init", daemon=True)
    # Joined from a thread (so that a hang can be given up on), Ray says it installs no SIGTERM
    # handler: the driver it would stop is this process, which stops anyway.
    quiet = _Drop("SIGTERM handler is not set")
    ray_logger = logging.getLogger("ray")
    ray_logger.addFilter(quiet)
    for handler in ray_logger.handlers:
        handler.addFilter(quiet)
    try:
        thread.start()
        thread.join(timeout_s)
    finally:
        ray_logger.removeFilter(quiet)
        for handler in ray_logger.handlers:
            handler.removeFilter(quiet)
    if thread.is_alive():
        raise RunError(
            f"could not join the Ray cluster at {address} within {timeout_s:g}s",
            hint="check that it is a Ray head (the GCS port), that this machine may reach "
            "every node of the cluster, and, if the cluster uses token authentication, that "
            "RAY_AUTH_MODE=token and its token are set here (see docs/scale-out.md)",
        )
    if failure:
        raise RunError(
            f"could not join the Ray cluster at {address}: {failure[0]}",
            hint="a cluster with token authentication needs its token here too "
            "(RAY_AUTH_MODE=token and the cluster's token; see docs/scale-out.md)",
        ) from failure[0]


class _Drop(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


class RayExecutor(Executor):
    """Backends on Ray actors and verification in Ray tasks (see the module's docs)."""

    name = "ray"

    def __init__(self, config: RayConfig) -> None:
        self.config = config
        self._started = False
        address = config.address
        local = (
            address is None
            or address in ("local", "127.0.0.1")
            or (address != "auto" and _host_port(address)[0] in ("127.0.0.1", "localhost"))
        )
        ray = import_ray(loopback=local)
        self._ray = ray
        common: dict[str, Any] = {
            "log_to_driver": False,  # keeps stdout (e.g. --json) Ponder's alone
            "logging_level": logging.WARNING,
            "namespace": "ponder",
        }
        if ray.is_initialized():
            return
        if address is None or address == "local":
            ray.init(
                # A new instance, never one found running here (e.g. left by a killed run).
                address="local",
                num_cpus=config.local_cpus or os.cpu_count() or 1,
                include_dashboard=False,
                object_store_memory=128 * 2**20,
                _node_ip_address="127.0.0.1",
                **common,
            )
            self._started = True
            logger.info("started a local Ray on 127.0.0.1 for this run")
            return
        if address != "auto":
            probe(address, config.connect_timeout_s)
        _init_within(ray, config.connect_timeout_s, address, **common)

    @property
    def started_local(self) -> bool:
        """Whether this executor started the Ray it uses (and shuts it down on close)."""
        return self._started

    def nodes(self) -> list[dict[str, Any]]:
        """The cluster's live nodes (``ray.nodes()`` entries)."""
        return [n for n in self._ray.nodes() if n.get("Alive")]

    def backend(self, config: BaseModel) -> Backend:
        from ponder.executors._actors import start_backend

        return start_backend(self._ray, config, self._placements(), self.config.lost_wait_s)

    def verifier(self, kind: str) -> Verifier:
        from ponder.executors._actors import RayVerifier

        cpus = sum(n.get("Resources", {}).get("CPU", 0.0) for n in self.nodes())
        return RayVerifier(self._ray, kind, window=max(1, int(cpus)))

    def _placements(self) -> list[tuple[dict[str, Any], int]]:
        """Ray options and engine threads of each actor of one backend."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if self.config.actors is not None:
            cpus = self.config.cpus_per_actor
            spread = {"num_cpus": cpus, "scheduling_strategy": "SPREAD"}
            return [(spread, max(1, math.ceil(cpus)))] * self.config.actors
        nodes = [n for n in self.nodes() if n.get("Resources", {}).get("CPU", 0) >= 1]
        if not nodes:
            raise ConfigError(
                "the Ray cluster has no node with CPUs to run backends on",
                hint="start worker nodes with CPUs (`ray start --address HEAD --num-cpus N`)",
            )
        # One actor per node, pinned to it, with all its CPUs as engine threads. It claims no
        # CPU from Ray so that several backends (the models of a system) and the verification
        # tasks fit beside it; its engine uses the cores as one local engine would.
        return [
            (
                {
                    "num_cpus": 0,
                    "scheduling_strategy": NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
                },
                int(n["Resources"]["CPU"]),
            )
            for n in nodes
        ]

    def close(self) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
            self._started = False


@register_executor("ray", RayConfig)
def _make_ray(config: RayConfig) -> RayExecutor:
    return RayExecutor(config)
