"""The plugin registry's public face: kinds, entry-point groups, listing and lookup, test helpers.

Plugins of each kind register with the kind's decorator (:func:`ponder.backends.register_backend`,
:func:`ponder.tasks.register_task`, :func:`ponder.verify.register_verifier`,
:func:`ponder.systems.register_component`, :func:`ponder.systems.register_extractor`), or from an
installed distribution through the kind's entry-point group::

    # a distribution's pyproject.toml
    [project.entry-points."ponder.backends"]
    echo = "echo_backend"            # a module whose import registers backend "echo"

    [project.entry-points."ponder.tasks"]
    riddles = "riddles:make_task"    # an object, registered as task "riddles"

The entry point's name is the registered name. The rules every kind shares (unique names, the
unknown-name error, lazy loading, plugins that fail to load) are in docs/plugins.md.
"""

from ponder._registry import (
    ENTRY_POINT_GROUPS,
    KINDS,
    Kind,
    isolated,
    lookup,
    names,
    register,
    unregister,
)

__all__ = [
    "ENTRY_POINT_GROUPS",
    "KINDS",
    "Kind",
    "isolated",
    "lookup",
    "names",
    "register",
    "unregister",
]
