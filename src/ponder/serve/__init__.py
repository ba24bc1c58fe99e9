"""``ponder serve``: an OpenAI-compatible server that runs a composed system per request.

::

    from ponder.serve import Limits, ServedModel, Service, create_app

    service = Service([ServedModel("smollm2-135m", backend, "llamacpp", "smollm2-135m")],
                      [SystemConfig.from_data(...)], db=Path("ponder.db"))
    app = create_app(service, api_keys={"k1"}, limits=Limits(max_n=8))   # any ASGI server runs it

Split as vLLM's entrypoints are: :mod:`._protocol` (pydantic models of the OpenAI API),
:mod:`._serving` (what a request means in library calls: model-name resolution, a system run per
request, usage over every internal call, traces, storing), :mod:`._app` (routes, auth, limits,
errors, streaming), :mod:`._ui` (the browser view at ``/ui``) and :mod:`._run` (loading what to
serve, running uvicorn with a drain on SIGTERM). See ``docs/serve.md``.
"""

from ponder.serve._app import ApiError, Limits, check_bind, create_app
from ponder.serve._protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    CompletionRequest,
    ErrorResponse,
    ModelList,
    PonderOptions,
    Progress,
    TextCompletion,
)
from ponder.serve._run import default_threads, load_service, read_api_keys, run_server
from ponder.serve._serving import (
    RequestError,
    ServedModel,
    Service,
    Target,
    UnknownModelError,
)
from ponder.serve._ui import SESSION_COOKIE, ui_router

__all__ = [
    "SESSION_COOKIE",
    "ApiError",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "CompletionRequest",
    "ErrorResponse",
    "Limits",
    "ModelList",
    "PonderOptions",
    "Progress",
    "RequestError",
    "ServedModel",
    "Service",
    "Target",
    "TextCompletion",
    "UnknownModelError",
    "check_bind",
    "create_app",
    "default_threads",
    "load_service",
    "read_api_keys",
    "run_server",
    "ui_router",
]
