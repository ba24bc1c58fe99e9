"""What names a search study, and how two spaces differ (so a resume with a changed space is refused)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ponder.errors import ConfigError
from ponder.search._space import SearchSpace


def study_name(
    space: SearchSpace,
    task: Mapping[str, Any],
    split_seed: int,
    *,
    settings: Mapping[str, Any] | None = None,
) -> str:
    """``search-<space name>-<hash>``: a hash of the space's name, the task's spec, the split seed
    and the ``settings`` that change what a trial measures (split sizes, algorithm, system seed).

    The same search on the same data resumes the same study; a change to the task, the split or
    those settings starts another. The space's *content* is deliberately not in the name: rerunning
    after editing the space file finds the study and :func:`check_same_space` refuses to mix the
    two, naming each difference (rename the space to start a new study).
    """
    blob = json.dumps(
        {
            "space": space.name,
            "task": task,
            "split_seed": split_seed,
            "settings": dict(settings or {}),
        },
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
