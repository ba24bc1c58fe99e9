"""What names a search study, and how two spaces differ (so a resume with a changed space is refused)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ponder.errors import ConfigError
from ponder.search._space import SearchSpace


def study_name(space: SearchSpace, task: Mapping[str, Any], split_seed: int) -> str:
    """``search-<space name>-<hash>``: a hash of the space, the task's spec and the split seed.

    The same search on the same data resumes the same study; any change to one of the three starts
    another (a changed space under an existing name is caught by :func:`check_same_space`).
    """
    blob = json.dumps(
        {"space": space.model_dump(mode="json"), "task": task, "split_seed": split_seed},
        sort_keys=True,
        default=str,
    )
    return f"search-{space.name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def differences(old: Any, new: Any, path: str = "") -> list[str]:
    """Where two JSON-like values differ: ``path: old -> new`` per leaf, in a stable order."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(f"{where}: added ({json.dumps(new[key], default=str)})")
            elif key not in new:
                out.append(f"{where}: removed (was {json.dumps(old[key], default=str)})")
            else:
                out += differences(old[key], new[key], where)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            d
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            for d in differences(a, b, f"{path}[{i}]")
        ]
    if old != new:
        return [
            f"{path or 'space'}: {json.dumps(old, default=str)} -> {json.dumps(new, default=str)}"
        ]
    return []


def check_same_space(stored: Mapping[str, Any], space: SearchSpace, name: str) -> None:
    """Refuse to resume study ``name`` (made from the space ``stored``) with a different ``space``.

    Raises:
        ConfigError: naming every difference, and how to start a new study instead.
    """
    found = differences(dict(stored), space.model_dump(mode="json"))
    if found:
        raise ConfigError(
            f"study {name} was made from another search space: " + "; ".join(found),
            hint="restore the space it was made from to resume it, or give the changed space "
            "another `name:` to start a new study",
        )
