"""Loading what to serve (models, systems, keys) and running the app under uvicorn."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ponder.backends import create_backend
from ponder.errors import ConfigError, NotFoundError
from ponder.models import DEFAULT_MODEL
from ponder.serve._serving import ServedModel, Service
from ponder.systems import ModelSpec, SystemConfig, load_config, parse_model

KEYS_ENV = "PONDER_API_KEYS"


def default_threads() -> int:
    """Engine threads of the models ``ponder serve`` loads: one core fewer than the machine has.

    Measured with ``bench/serve.py --threads-sweep`` on a 2-core machine shared with other jobs
    (16 concurrent streamed requests, smollm2-135m): with 1 engine thread the raw engine decoded
    87 tokens/s in all, with 2 (all cores) 20 tokens/s, and streams stalled up to 9 s between two
    chunks. llama.cpp's threads wait on each other at every step, so one preempted thread stalls
    them all; leaving a core free keeps the server's own event loop (and its neighbours) from
    being the one that preempts them.
    """
    return max(1, (os.cpu_count() or 1) - 1)


def read_api_keys(path: Path | None, env: str = KEYS_ENV) -> frozenset[str]:
    """API keys from a file (one per line; blank lines and ``#`` comments skipped) and from the
    environment variable ``env`` (comma-separated).

    Raises:
        NotFoundError: the file does not exist.
        ConfigError: the file names no key.
    """
    keys: set[str] = set()
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise NotFoundError(f"no API key file {path}") from None
        keys |= {s for line in lines if (s := line.strip()) and not s.startswith("#")}
        if not keys:
            raise ConfigError(f"the API key file {path} holds no key", hint="one key per line")
    keys |= {k.strip() for k in os.environ.get(env, "").split(",") if k.strip()}
    return frozenset(keys)


def _spec(
    text: str | dict[str, Any],
    *,
    backend: str,
    base_url: str | list[str] | None,
    api_key_env: str,
    threads: int | None,
) -> tuple[str, ModelSpec]:
    """A served name and the model spec of one ``--model``."""
    target = parse_model(text, what="--model") if isinstance(text, str) else text
    if isinstance(target, str):
        if backend == "llamacpp":
            data: dict[str, Any] = {"backend": "llamacpp", "model": target}
            if threads is not None:
                data["threads"] = threads
        else:
            data = {"backend": backend, "model": target}
            if base_url is not None:
                data["base_url"] = base_url
            if backend == "openai":
                data["api_key_env"] = api_key_env
        name = Path(target).stem if target.endswith(".gguf") else target
    else:
        data = dict(target)
        if data.get("backend") == "llamacpp" and threads is not None:
            data.setdefault("threads", threads)
        name = str(data.get("model") or data.get("name") or data.get("backend"))
        if name.endswith(".gguf"):
            name = Path(name).stem
    try:
        return name, ModelSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"--model {text}: {exc.errors()[0]['msg']}") from None


def load_service(
    models: Sequence[str],
    systems: Sequence[Path] = (),
    *,
    backend: str = "llamacpp",
    base_url: str | list[str] | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    threads: int | None = None,
    db: Path | None = None,
    default_max_tokens: int = 512,
) -> Service:
    """The service of ``ponder serve``: the models (created, not yet loaded) and systems.

    Without ``models``, the first system's own model is served (else the default embedded model).
    Embedded models that set no ``threads`` get ``threads`` (default: :func:`default_threads`).

    Raises:
        ConfigError: an invalid model or system, or a system that needs a model not served.
    """
    threads = default_threads() if threads is None else threads
    configs: list[SystemConfig] = [load_config(path) for path in systems]
    texts: list[str | dict[str, Any]] = list(models)
    if not texts:
        first = configs[0].model if configs else None
        texts = (
            [first.model_dump(mode="json")]
            if isinstance(first, ModelSpec)
            else [first or DEFAULT_MODEL]
        )
    served: list[ServedModel] = []
    for text in texts:
        name, spec = _spec(
            text, backend=backend, base_url=base_url, api_key_env=api_key_env, threads=threads
        )
        if any(m.name == name for m in served):
            raise ConfigError(f"--model {name} is given twice")
        model = str(spec.options.get("model", name))
        backend_obj = create_backend(spec.backend_config())
        served.append(ServedModel(name, backend_obj, spec.backend, model))
    return Service(served, configs, db=db, default_max_tokens=default_max_tokens)


def run_server(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    drain_s: float = 30.0,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``app`` until SIGINT/SIGTERM; then stop accepting connections and let in-flight
    requests finish for up to ``drain_s`` seconds before exiting.

    ``on_ready`` gets the base URL once the socket listens (``port`` 0 picks a free port).
    """
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=max(0, round(drain_s)),
        lifespan="on",
    )
    server = uvicorn.Server(config)

    async def main() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started and on_ready is not None:
            sock = server.servers[0].sockets[0].getsockname()
            shown = f"[{host}]" if ":" in host else host
            on_ready(f"http://{shown}:{sock[1]}")
        await task

    asyncio.run(main())
