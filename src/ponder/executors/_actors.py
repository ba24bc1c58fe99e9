"""What runs on the Ray cluster: actors that own a backend, the driver's pool of them, and
verification as Ray tasks.

Only this module touches Ray objects; it is imported once Ray is (see :mod:`._ray`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from ponder._closing import Closing
from ponder.backends import Backend
from ponder.errors import ConfigError, PonderError, RunError
from ponder.records import Generation, GenerationRequest, Verdict

logger = logging.getLogger(__name__)

PLACE_TIMEOUT_S = 120.0
"""How long the actors of a backend may take to start (placed, backend built)."""


class BackendHost:
    """A Ray actor's state: one backend, built on the actor's node from its config.

    A synchronous actor (one call at a time, as the pool sends them) that runs each request to
    completion on its own event loop: a Ray call to it costs less than to an asynchronous actor
    (measured: 1.0 ms against 1.4 ms per round trip), and the loop stays the same for the
    backend's lifetime, as its connections and bounds expect.
    """

    def __init__(self, kind: str, options: dict[str, Any], threads: int) -> None:
        import ray

        from ponder.backends import THREADS_ENV, backend_config_type, create_backend

        # The engine of this actor uses the CPUs Ray gave it (the variable is read when an
        # embedded engine starts, unless the config names its threads).
        os.environ[THREADS_ENV] = str(threads)
        self._backend = create_backend(backend_config_type(kind).model_validate(options))
        self._loop = asyncio.new_event_loop()
        node_id = ray.get_runtime_context().get_node_id()
        self.node = f"{ray.util.get_node_ip_address()}/{node_id[:8]}"

    def info(self) -> dict[str, Any]:
        from ponder.backends import default_threads

        b = self._backend
        return {
            "threads": default_threads(),
            "identity": b.identity,
            "max_batch": b.max_batch,
            "name": b.name,
            "node": self.node,
            "pid": os.getpid(),
        }

    def complete(self, request: GenerationRequest) -> Generation:
        generation = self._loop.run_until_complete(self._backend.complete(request))
        return generation.model_copy(update={"node": self.node})

    def context_size(self) -> int | None:
        return self._backend.context_size()

    def count_tokens(self, text: str) -> int | None:
        return self._backend.count_tokens(text)


_remote_host: Any = None


def _host_class(ray: Any) -> Any:
    global _remote_host
    if _remote_host is None:
        # Restarted when its process dies (the request it had is sent elsewhere meanwhile).
        _remote_host = ray.remote(max_restarts=2, max_task_retries=0)(BackendHost)
    return _remote_host


def start_backend(
    ray: Any,
    config: BaseModel,
    placements: Sequence[tuple[dict[str, Any], int]],
    lost_wait_s: float,
) -> RayBackend:
    """Start one actor per placement, each owning the backend of ``config``, and pool them.

    Raises:
        RunError: the actors could not be placed or their backends not built in time.
    """
    kind = str(getattr(config, "kind", ""))
    options = config.model_dump(mode="json")
    host = _host_class(ray)
    actors = [host.options(**opts).remote(kind, options, threads) for opts, threads in placements]
    try:
        infos = ray.get([a.info.remote() for a in actors], timeout=PLACE_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        for a in actors:
            ray.kill(a)
        raise RunError(
            f"could not start {len(actors)} Ray actor(s) for backend {kind} within "
            f"{PLACE_TIMEOUT_S:g}s: the cluster lacks the resources they ask for",
            hint="lower --ray-actors, or add nodes",
        ) from None
    except ray.exceptions.RayTaskError as exc:
        for a in actors:
            ray.kill(a)
        if isinstance(exc.cause, PonderError):
            raise exc.cause from None
        raise RunError(f"backend {kind} failed to start on a Ray actor: {exc.cause}") from None
    identities = {i["identity"] for i in infos}
    if len(identities) != 1:
        raise ConfigError(
            f"the actors of one backend name different models: {sorted(identities)}",
            hint="give every node the same model (a node-local server must serve the same one)",
        )
    logger.info(
        "backend %s on %d Ray actor(s): %s",
        infos[0]["identity"],
        len(actors),
        ", ".join(f"{i['node']} pid {i['pid']}" for i in infos),
    )
    return RayBackend(ray, actors, infos, lost_wait_s=lost_wait_s)


class RayBackend(Backend):
    """A pool of Ray actors owning the same backend; one request per actor at a time.

    Its identity is the actors' backend's, so a run is the same run on Ray as in one process. A
    request is sent to an idle actor as it is (prompt, n, seed): the actor's backend applies its
    own policy (retries, splitting n). An actor lost mid-request (process or node gone) is taken
    out, the request goes to another one, and the lost one comes back if Ray restarts it; when no
    actor is left for ``lost_wait_s``, requests fail.
    """

    def __init__(
        self, ray: Any, actors: Sequence[Any], infos: Sequence[dict[str, Any]], lost_wait_s: float
    ) -> None:
        super().__init__()
        self._ray = ray
        self._info = dict(infos[0])
        self._actors = list(actors)
        self.nodes = [i["node"] for i in infos]
        self._idle: deque[Any] = deque(actors)
        self._busy = 0
        self._reviving: set[Any] = set()
        self._lost_wait_s = lost_wait_s
        self._last_loss = ""
        self._cv: asyncio.Condition | None = None
        self._cv_loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.lost = 0
        """Requests that lost their actor mid-way and were sent again."""

    @property
    def identity(self) -> str:
        return str(self._info["identity"])

    @property
    def name(self) -> str:
        return f"{self._info['name']} (Ray, {len(self._actors)} actors)"

    @property
    def max_batch(self) -> int:
        return int(self._info["max_batch"])

    @property
    def request_slots(self) -> int:
        return max(1, len(self._actors))

    @property
    def actors(self) -> list[Any]:
        """The actor handles (for tests and tools: e.g. to find their processes)."""
        return list(self._actors)

    def _cond(self) -> asyncio.Condition:
        loop = asyncio.get_running_loop()
        if self._cv is None or self._cv_loop is not loop:
            self._cv, self._cv_loop = asyncio.Condition(), loop
        return self._cv

    async def _take(self) -> Any:
        cv = self._cond()
        alone_since: float | None = None
        async with cv:
            while not self._idle:
                if not self._busy:
                    alone_since = alone_since or time.monotonic()
                    if not self._reviving or time.monotonic() - alone_since > self._lost_wait_s:
                        raise RunError(
                            f"every Ray actor of {self.identity} was lost; last: {self._last_loss}",
                            hint="the run keeps what was drawn; rerun it once the cluster has "
                            "nodes again",
                        )
                # Wake up now and then to see how long the pool has been without actors.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(cv.wait(), 1.0)
            self._busy += 1
            return self._idle.popleft()

    async def _give_back(self, actor: Any, *, lost: BaseException | None = None) -> None:
        cv = self._cond()
        async with cv:
            self._busy -= 1
            if lost is None:
                self._idle.append(actor)
            else:
                self._reviving.add(actor)
                task = asyncio.create_task(self._revive(actor))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            cv.notify_all()

    async def _revive(self, actor: Any) -> None:
        """Wait for a lost actor: back in the pool if Ray restarted it, dropped if it is dead."""
        back = False
        try:
            await actor.info.remote()
            back = True
        except self._ray.exceptions.RayActorError as exc:
            logger.warning("a Ray actor of %s is gone for good: %s", self.identity, _first(exc))
            if actor in self._actors:
                self._actors.remove(actor)
        except asyncio.CancelledError:
            back = True  # the loop ends; whoever uses the pool next finds out
            raise
        finally:
            cv = self._cond()
            async with cv:
                self._reviving.discard(actor)
                if back:
                    self._idle.append(actor)
                cv.notify_all()

    async def _send(self, request: GenerationRequest) -> Generation:
        errors = self._ray.exceptions
        while True:
            actor = await self._take()
            try:
                generation: Generation = await actor.complete.remote(request)
            except (errors.RayActorError, errors.NodeDiedError, errors.WorkerCrashedError) as exc:
                self.lost += 1
                self._last_loss = _first(exc)
                logger.warning(
                    "a Ray actor of %s was lost mid-request (%s); the request goes to another",
                    self.identity,
                    self._last_loss,
                )
                await self._give_back(actor, lost=exc)
                continue
            except errors.RayTaskError as exc:
                await self._give_back(actor)
                cause = exc.cause
                if isinstance(cause, Exception):
                    raise cause from None
                raise
            except BaseException:
                await self._give_back(actor)
                raise
            await self._give_back(actor)
            return generation

    def _ask(self, method: str, *args: Any) -> Any:
        for actor in list(self._idle) or self._actors:
            try:
                return self._ray.get(getattr(actor, method).remote(*args), timeout=PLACE_TIMEOUT_S)
            except self._ray.exceptions.RayActorError:
                continue
        raise RunError(f"no Ray actor of {self.identity} answered")

    def context_size(self) -> int | None:
        size = self._ask("context_size")
        return None if size is None else int(size)

    def count_tokens(self, text: str) -> int | None:
        count = self._ask("count_tokens", text)
        return None if count is None else int(count)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        actors, self._actors = self._actors, []
        self._idle.clear()
        for actor in actors:
            self._ray.kill(actor)


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _judge(kind: str, items: list[tuple[str | None, str]]) -> list[Verdict]:
    """Verdicts of ``items`` by a verifier of ``kind`` made on this node (its own sandbox)."""
    from ponder.verify import make_verifier

    with make_verifier(kind) as verifier:
        return verifier.verify_many(items)


_remote_judge: Any = None


class RayVerifier(Closing):
    """A verifier of ``kind`` whose work runs as Ray tasks over the cluster's nodes.

    Items go out in chunks, at most ``window`` tasks at a time (the cluster's CPUs: tasks claim
    none, so they never wait for CPUs the backends' actors hold); a task whose worker dies is
    retried by Ray. The name is the kind's, so verdicts are stored as a local verifier's are.
    """

    def __init__(self, ray: Any, kind: str, *, window: int, chunk: int = 32) -> None:
        from ponder.verify import make_verifier

        global _remote_judge
        if _remote_judge is None:
            _remote_judge = ray.remote(max_retries=3)(_judge)
        self._ray = ray
        self.kind = kind
        self._window = window
        self._chunk = chunk
        self._local = make_verifier(kind)  # for its name; judges nothing here

    @property
    def name(self) -> str:
        return self._local.name

    def verify_many(self, items: Sequence[tuple[str | None, str]]) -> list[Verdict]:
        parts = [list(items[i : i + self._chunk]) for i in range(0, len(items), self._chunk)]
        results: dict[Any, list[Verdict]] = {}
        order: list[Any] = []
        pending: list[Any] = []
        for part in parts:
            if len(pending) >= self._window:
                done, pending = self._ray.wait(pending, num_returns=1)
                results.update(zip(done, self._ray.get(done), strict=True))
            ref = _remote_judge.options(num_cpus=0, scheduling_strategy="SPREAD").remote(
                self.kind, part
            )
            order.append(ref)
            pending.append(ref)
        if pending:
            results.update(zip(pending, self._ray.get(pending), strict=True))
        return [v for ref in order for v in results[ref]]

    def close(self) -> None:
        self._local.close()
