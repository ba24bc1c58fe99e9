"""Composed inference systems: layers of components over a typed state (Archon-style).

::

    from ponder.systems import System

    system = System.load("configs/sample-8-vote.yaml")   # or System.from_dict / from_archon
    # Archon JSON: System.load("archon.json", default_model="qwen2.5-coder-0.5b", model_map={...})
    result = system.run("What is 17*23?")                 # or: await system.arun(messages)
    result.answer, result.trace, result.usage

A system is a list of layers; a layer is a list of components that run concurrently on the same
state (see :mod:`ponder.systems._layer` for how their outputs combine). The state carries the
query, the candidates (with provenance and scores), critiques and unit tests. The answer is the
first candidate after the last layer. Every run has a :class:`Trace` (JSON-serialisable; render it
with :func:`trace_tree`) and :class:`Usage` summed per component and per query.

Components that put many candidates in one prompt (fuse, rank, critique, judge) fit them into the
model's context, shortening the longest with a visible marker (recorded in the trace), and every
call's ``max_tokens`` is limited to what the context leaves after its prompt; see
:mod:`ponder.systems._budget`.

Systems can reuse generations: with ``System(..., generation_cache=StoreGenerationCache(store))``
a model call whose model, exact prompt and sampling parameters (seed included) were asked before
is served from the stored completions, drawing only the missing ones (see
:mod:`ponder.systems._cache`); with ``shared_backends=`` several systems share one backend per
model spec (a search builds many systems on the same embedded model).

Components: see :mod:`ponder.systems.components`; add your own with :func:`register_component`
(plugins: the ``ponder.components`` entry-point group).
"""

from ponder.systems import components as components
from ponder.systems._archon import (
    ARCHON_TYPES,
    ArchonImportWarning,
    ModelTarget,
    convert_archon,
    import_archon,
    looks_like_archon,
)
from ponder.systems._budget import PromptTooLongError
from ponder.systems._cache import GenerationCache, StoreGenerationCache, generation_key
from ponder.systems._component import (
    Component,
    ComponentConfig,
    Delta,
    ModelComponentConfig,
    component_class,
    component_types,
    register_component,
)
from ponder.systems._config import SystemConfig, config_error, read_config_file
from ponder.systems._context import Asked, Resources, RunContext, VerifierLike
from ponder.systems._errors import ComponentError
from ponder.systems._extract import Extractor, extractor_names, get_extractor, register_extractor
from ponder.systems._load import (
    load_config,
    parse_model,
    parse_model_map,
    with_default_model,
    with_token_cap,
    with_truncation,
)
from ponder.systems._models import (
    RUN_IDENTITY,
    BackendPool,
    ModelRef,
    ModelSpec,
    aclose_backends,
)
from ponder.systems._parsing import Unparseable
from ponder.systems._state import Candidate, Critique, Provenance, State, as_messages, query_text
from ponder.systems._system import LayerHook, Query, System, SystemResult
from ponder.systems._trace import (
    CallRecord,
    ComponentEvent,
    Fallback,
    LayerRecord,
    Reuse,
    SearchTree,
    Trace,
    TreeNode,
    Usage,
)
from ponder.systems._tree import children_best_first, trace_tree

__all__ = [
    "ARCHON_TYPES",
    "RUN_IDENTITY",
    "ArchonImportWarning",
    "Asked",
    "BackendPool",
    "CallRecord",
    "Candidate",
    "Component",
    "ComponentConfig",
    "ComponentError",
    "ComponentEvent",
    "Critique",
    "Delta",
    "Extractor",
    "Fallback",
    "GenerationCache",
    "LayerHook",
    "LayerRecord",
    "ModelComponentConfig",
    "ModelRef",
    "ModelSpec",
    "ModelTarget",
    "PromptTooLongError",
    "Provenance",
    "Query",
    "Resources",
    "Reuse",
    "RunContext",
    "SearchTree",
    "State",
    "StoreGenerationCache",
    "System",
    "SystemConfig",
    "SystemResult",
    "Trace",
    "TreeNode",
    "Unparseable",
    "Usage",
    "VerifierLike",
    "aclose_backends",
    "as_messages",
    "children_best_first",
    "component_class",
    "component_types",
    "components",
    "config_error",
    "convert_archon",
    "extractor_names",
    "generation_key",
    "get_extractor",
    "import_archon",
    "load_config",
    "looks_like_archon",
    "parse_model",
    "parse_model_map",
    "query_text",
    "read_config_file",
    "register_component",
    "register_extractor",
    "trace_tree",
    "with_default_model",
    "with_token_cap",
    "with_truncation",
]
