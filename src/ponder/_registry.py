"""One registry for every kind of plugin.

Backends, tasks, verifiers, system components, answer extractors, stop rules (adaptive compute),
executors (scale-out) and process scorers (tree search) register here. Each kind keeps its
decorator in its own package (``register_backend``, ``register_task``, ...); they all store into
this one registry, so every kind follows the same rules:

* **A name is unique within its kind.** Registering a different object under a taken name raises
  :class:`~ponder.errors.DuplicateNameError` (an overwrite would silently hide one of them);
  registering the same object again (its module imported twice or reloaded) is harmless.
* **An unknown name** raises :class:`~ponder.errors.UnknownNameError`, whose message lists the valid
  names and suggests the closest one.
* **Built-ins can load lazily**: :func:`register_lazy` names the module that registers a name; the
  module is imported on the first lookup of that name, and listing names does not import it.
* **Plugins are entry points**, one group per kind (:data:`ENTRY_POINT_GROUPS`). An entry point's
  name is the name it registers, and its value names either

  - a module, or an object in one, whose import registers the name with the kind's decorator, or
  - an object that its import does not register: the registry then registers that object under
    the entry point's name, after the kind's check (a task factory must be callable, a component
    class must declare ``type: Literal[name]``, ...).

  Entry points load lazily (never when Ponder is imported) and at most once per process. A lookup
  of a name that is not registered loads the entry point of that name; a lookup that still misses,
  and any listing of names, loads the whole group once (so a plugin module that registers names
  other than its entry point's keeps working). A plugin that fails to load is remembered, not
  retried: lookups of its name raise :class:`~ponder.errors.PluginLoadError`, naming its
  distribution and the cause, while every other name and every listing keeps working.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from types import MappingProxyType, ModuleType
from typing import Literal, TypeVar, get_args

from ponder.errors import DuplicateNameError, PluginLoadError, UnknownNameError, UserError

Kind = Literal[
    "backend", "task", "verifier", "component", "extractor", "stop_rule", "executor", "scorer"
]
"""Every kind of plugin."""

KINDS: tuple[Kind, ...] = get_args(Kind)

ENTRY_POINT_GROUPS: Mapping[Kind, str] = MappingProxyType(
    {
        "backend": "ponder.backends",
        "task": "ponder.tasks",
        "verifier": "ponder.verifiers",
        "component": "ponder.components",
        "extractor": "ponder.extractors",
        "stop_rule": "ponder.stop_rules",
        "executor": "ponder.executors",
        "scorer": "ponder.scorers",
    }
)
"""The entry-point group through which installed distributions add plugins of each kind."""

_LABELS: Mapping[Kind, str] = MappingProxyType(
    {
        "backend": "backend",
        "task": "task",
        "verifier": "verifier",
        "component": "component type",
        "extractor": "answer extractor",
        "stop_rule": "stop rule",
        "executor": "executor",
        "scorer": "scorer",
    }
)

Adopter = Callable[[str, object], object]
"""``(name, object) -> what the kind registers``: the kind's check of every registration (by its
decorator or from an entry point); raises (TypeError, ValueError or a UserError) saying why the
object cannot be a plugin of the kind."""


def callable_adopter(what: str) -> Adopter:
    """An adopter for kinds whose plugins are plain callables (``what`` names one in errors)."""

    def adopt(name: str, obj: object) -> object:
        if not callable(obj):
            raise TypeError(f"{what} {name!r}: {obj!r} is not callable")
        return obj

    return adopt


@dataclass(frozen=True)
class _Entry:
    obj: object
    origin: str  # module.qualname of what was registered: the same origin is the same object
    module: str | None
    distribution: str | None  # the plugin distribution whose loading registered it


@dataclass(frozen=True)
class _Failure:
    error: UserError
    cause: BaseException | None


@dataclass
class _State:
    entries: dict[Kind, dict[str, _Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})
    lazy: dict[Kind, dict[str, str]] = field(default_factory=lambda: {k: {} for k in KINDS})
    adopters: dict[Kind, Adopter] = field(default_factory=dict)
    discovered: dict[Kind, dict[str, list[EntryPoint]]] = field(default_factory=dict)
    tried: set[tuple[Kind, str]] = field(default_factory=set)
    groups_loaded: set[Kind] = field(default_factory=set)
    failures: dict[Kind, dict[str, _Failure]] = field(
        default_factory=lambda: {k: {} for k in KINDS}
    )
    loading: str | None = None  # distribution whose entry point is being loaded

    def copy_without_plugins(self) -> _State:
        """Registrations, lazy built-ins and adopters copied; entry points to be discovered afresh."""
        return _State(
            entries={k: dict(v) for k, v in self.entries.items()},
            lazy={k: dict(v) for k, v in self.lazy.items()},
            adopters=dict(self.adopters),
        )


_log = logging.getLogger("ponder.plugins")
_state = _State()
# Re-entrant: loading a plugin imports modules that register (and may look up) names.
_lock = threading.RLock()


def _check_kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind {kind!r}; kinds: {', '.join(KINDS)}")
    return kind


def _check_name(kind: Kind, name: object) -> str:
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"invalid {_LABELS[kind]} name {name!r}: a non-empty string without edges")
    return name


def _origin(obj: object) -> tuple[str, str | None]:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module or '?'}.{qualname}", module


def _described(entry: _Entry) -> str:
    return entry.origin + (f" (distribution {entry.distribution!r})" if entry.distribution else "")


def register(kind: Kind, name: str, obj: object, *, source: object | None = None) -> None:
    """Register ``obj`` as the ``kind`` plugin called ``name``.

    Args:
        kind: The plugin kind.
        name: Its name, unique within the kind.
        obj: What lookups return.
        source: The object whose module and qualified name identify the registration, when ``obj``
            wraps it (a backend registers its factory together with its config class).

    Raises:
        DuplicateNameError: a different object already has the name, or the name belongs to a
            built-in that loads lazily from another module.
    """
    kind = _check_kind(kind)
    name = _check_name(kind, name)
    origin, module = _origin(obj if source is None else source)
    label = _LABELS[kind]
    with _lock:
        lazy_module = _state.lazy[kind].get(name)
        if lazy_module is not None and module != lazy_module:
            raise DuplicateNameError(
                f"{label} {name!r} is a built-in (in {lazy_module}); {origin} cannot take its name",
                hint=f"register {origin} under another name",
            )
        existing = _state.entries[kind].get(name)
        if existing is not None and existing.obj is not obj and existing.origin != origin:
            raise DuplicateNameError(
                f"{label} {name!r} is already registered by {_described(existing)}; "
                f"{origin} cannot take its name",
                hint=f"register {origin} under another name",
            )
        adopter = _state.adopters.get(kind)
        adopted = adopter(name, obj) if adopter is not None else obj
        _state.entries[kind][name] = _Entry(adopted, origin, module, _state.loading)


T = TypeVar("T")


def registering(kind: Kind, name: str) -> Callable[[T], T]:
    """A decorator that registers what it decorates as the ``kind`` plugin ``name`` (see
    :func:`register`); each kind's public decorator is this one."""
    _check_name(_check_kind(kind), name)

    def decorate(obj: T) -> T:
        register(kind, name, obj)
        return obj

    return decorate


def unregister(kind: Kind, name: str) -> None:
    """Remove the ``kind`` plugin called ``name`` (for tests; see also :func:`isolated`).

    Raises:
        UnknownNameError: nothing is registered under the name.
    """
    kind = _check_kind(kind)
    with _lock:
        if _state.entries[kind].pop(name, None) is None:
            raise _unknown(kind, name)


def register_lazy(kind: Kind, name: str, module: str) -> None:
    """Declare a built-in whose ``module`` registers ``name`` when first looked up.

    Listing names includes ``name`` without importing ``module`` (the openai client alone costs
    ~0.3 s to import), and no other module may take the name.
    """
    kind = _check_kind(kind)
    with _lock:
        _state.lazy[kind][_check_name(kind, name)] = module


def set_adopter(kind: Kind, adopter: Adopter) -> None:
    """Set the kind's check of every registration (see :data:`Adopter`); set it before the first."""
    with _lock:
        _state.adopters[_check_kind(kind)] = adopter


def lookup(kind: Kind, name: str) -> object:
    """The ``kind`` plugin called ``name``, loading its module or plugin on first use.

    Raises:
        UnknownNameError: no such name; the message lists the valid ones and a close match.
        PluginLoadError: the plugin that provides the name failed to load (its distribution and
            the cause are in the message).
        DuplicateNameError: two installed distributions provide the name.
    """
    kind = _check_kind(kind)
    with _lock:
        entry = _state.entries[kind].get(name)
        module = _state.lazy[kind].get(name)
    if entry is not None:
        return entry.obj
    if module is not None:
        # Imported without holding the lock: another thread may be importing the module already,
        # and its registration (which takes the lock) must be able to finish.
        importlib.import_module(module)
        entry = _state.entries[kind].get(name)
        if entry is None:
            raise AssertionError(f"{module} does not register {kind} {name!r}")
        return entry.obj
    # Plugins load under the lock, so that each loads once.
    with _lock:
        eps = _discovered(kind).get(name)
        if eps is not None:
            _load(kind, name, eps)
        if name not in _state.entries[kind] and name not in _state.failures[kind]:
            _load_group(kind)
        entry = _state.entries[kind].get(name)
        failure = _state.failures[kind].get(name)
    if entry is not None:
        return entry.obj
    if failure is not None:
        error = failure.error  # a fresh instance per raise, so tracebacks do not pile up
        raise type(error)(error.message, hint=error.hint) from failure.cause
    raise _unknown(kind, name)


def names(kind: Kind) -> list[str]:
    """Every name of ``kind``, sorted: registered, lazy built-ins, and installed plugins (including
    those that failed to load, whose lookup explains why). Lazy built-ins are not imported."""
    kind = _check_kind(kind)
    with _lock:
        _load_group(kind)
        return sorted({*_state.entries[kind], *_state.lazy[kind], *_state.failures[kind]})


def loaded(kind: Kind) -> dict[str, object]:
    """Every ``kind`` plugin that loads, by name (lazy built-ins imported; plugins that failed to
    load left out, since listing must not break on them)."""
    kind = _check_kind(kind)
    listed = names(kind)
    with _lock:
        failed = set(_state.failures[kind])
    return {name: lookup(kind, name) for name in listed if name not in failed}


def _discovered(kind: Kind) -> dict[str, list[EntryPoint]]:
    found = _state.discovered.get(kind)
    if found is None:
        found = {}
        for ep in entry_points(group=ENTRY_POINT_GROUPS[kind]):
            found.setdefault(ep.name, []).append(ep)
        _state.discovered[kind] = found
    return found


def _load_group(kind: Kind) -> None:
    if kind in _state.groups_loaded:
        return
    _state.groups_loaded.add(kind)
    for name, eps in _discovered(kind).items():
        _load(kind, name, eps)


def _distribution(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return str(dist.name) if dist is not None else "?"


def _load(kind: Kind, name: str, eps: list[EntryPoint]) -> None:
    """Load the entry point(s) called ``name`` once; a failure is recorded against the name."""
    if (kind, name) in _state.tried:
        return
    _state.tried.add((kind, name))
    label, group = _LABELS[kind], ENTRY_POINT_GROUPS[kind]
    providers = sorted({(_distribution(ep), ep.value) for ep in eps})
    if len(providers) > 1:
        dists = ", ".join(f"{d!r} ({v})" for d, v in providers)
        error: UserError = DuplicateNameError(
            f"{label} {name!r} is provided by more than one installed distribution: {dists}",
            hint="uninstall all but one of them",
        )
        _state.failures[kind][name] = _Failure(error, None)
        return
    ep = eps[0]
    dist = _distribution(ep)
    outer, _state.loading = _state.loading, dist
    try:
        obj = ep.load()
        existing = _state.entries[kind].get(name)
        if isinstance(obj, ModuleType):
            pass  # its import registered what it registers
        elif existing is None:
            register(kind, name, obj)
        elif existing.obj is not obj and existing.origin != _origin(obj)[0]:
            raise DuplicateNameError(
                f"{label} {name!r} is already registered by {_described(existing)}",
                hint="the plugin must register under another name",
            )
    # A plugin may raise anything while it is imported; it must break only its own names.
    except Exception as exc:  # noqa: BLE001
        error = PluginLoadError(
            f"{label} {name!r} comes from the plugin distribution {dist!r} "
            f"(entry point {name} = {ep.value} in group {group}), which failed to load: "
            f"{type(exc).__name__}: {exc}",
            hint=f"fix or reinstall {dist!r} (pip install --force-reinstall {dist}), "
            f"or uninstall it (pip uninstall {dist})",
        )
        _state.failures[kind][name] = _Failure(error, exc)
        # Listing goes on without it; say so once, where a user can see it.
        _log.warning("%s", error)
    finally:
        _state.loading = outer


def _unknown(kind: Kind, name: str) -> UnknownNameError:
    choices = names(kind)
    label, group = _LABELS[kind], ENTRY_POINT_GROUPS[kind]
    message = f"unknown {label} {name!r}"
    close = difflib.get_close_matches(name, choices, n=1)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    message += f"; choose one of: {', '.join(choices)}" if choices else f"; no {label} exists yet"
    return UnknownNameError(
        message,
        kind=kind,
        name=name,
        choices=choices,
        hint=f"installed packages add {label}s through the {group!r} entry-point group",
    )


@contextmanager
def isolated() -> Iterator[None]:
    """Run a block against a copy of the registry, and restore the registry afterwards.

    For tests of plugins: registrations made inside the block are forgotten on exit, and entry
    points are discovered afresh inside it (a distribution put on ``sys.path`` in the block is
    seen; give its modules names no other test uses, as Python imports a module once). Modules
    first imported inside the block outside any plugin (a lazy built-in) keep their
    registrations, since importing them again would not register them again.
    """
    global _state
    with _lock:
        outer = _state
        before = set(sys.modules)
        _state = outer.copy_without_plugins()
    try:
        yield
    finally:
        with _lock:
            inner, _state = _state, outer
            for kind in KINDS:
                for name, entry in inner.entries[kind].items():
                    fresh = entry.module is not None and entry.module not in before
                    if fresh and entry.distribution is None and name not in outer.entries[kind]:
                        outer.entries[kind][name] = entry
