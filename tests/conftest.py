"""Shared fixtures: real embedded model, real llama.cpp HTTP server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ponder.models import resolve_model

TEST_MODEL = "smollm2-135m"


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """Path of the small real model used by integration tests."""
    return resolve_model(TEST_MODEL)


@pytest.fixture(scope="session")
def llama_server(smollm2_path: Path) -> Iterator[str]:
    """A real llama.cpp server (xllamacpp, in-process) listening on 127.0.0.1; yields its base URL.

    It speaks the OpenAI-compatible HTTP API, so the ``openai`` backend is tested against a real server.
    """
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(smollm2_path)
    params.n_parallel = 8
    params.n_ctx = 8 * 1024
    params.kv_unified = True
    params.cpuparams.n_threads = 2
    params.cpuparams_batch.n_threads = 2
    params.verbosity = -1
    params.warmup = False
    server = xllamacpp.Server(params)
    try:
        yield str(server.listening_address).rstrip("/")
    finally:
        del server


@pytest.fixture(scope="session")
def embedded() -> Iterator[object]:
    """The real embedded backend on the small model, loaded once per test session."""
    from ponder.backends import LlamaCppBackend, LlamaCppConfig

    backend = LlamaCppBackend(LlamaCppConfig(model=TEST_MODEL, n_parallel=8, ctx_per_sequence=1024))
    backend.start()
    try:
        yield backend
    finally:
        backend.close()
