"""Access to reasoning-gym: import it (or say how to install it), list its datasets, and build a
dataset from Ponder's options, checked against the dataset's own configuration class."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import json
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from ponder.errors import ConfigError, UserError

GYM_DISTRIBUTION = "reasoning-gym"
"""The PyPI distribution of reasoning-gym."""
GYM_VERSION = "0.1.25"
"""The version Ponder's ``gym`` extra pins (what the tests and the docs ran with)."""
GYM_INSTALL = f"pip install {GYM_DISTRIBUTION}=={GYM_VERSION}"
"""The command that installs it (the same as ``pip install "ponder[gym]"`` does)."""

COMPOSITE = "composite"
"""reasoning-gym's dataset that mixes others (Ponder's option ``mix``)."""

DEFAULT_SIZE = 100
"""Problems per task when ``size`` is not given."""
DEFAULT_SEED = 0
"""Generator seed when ``seed`` is not given (reasoning-gym's own default is a random seed)."""


def import_gym() -> ModuleType:
    """The ``reasoning_gym`` module.

    Raises:
        UserError: it is not installed (the hint is the install command).
    """
    try:
        return importlib.import_module("reasoning_gym")
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        cause = "" if missing in (None, "reasoning_gym") else f" (its import needs {missing!r})"
        raise UserError(
            f"gym tasks need the optional package {GYM_DISTRIBUTION}, which is not installed"
            f"{cause}",
            hint=f'{GYM_INSTALL}   (or install Ponder with its extra: pip install "ponder[gym]")',
        ) from None


def gym_version() -> str:
    """The installed version of reasoning-gym (from its distribution's metadata).

    Raises:
        UserError: it is not installed.
    """
    import_gym()
    try:
        return importlib.metadata.version(GYM_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            f"reasoning_gym imports but the {GYM_DISTRIBUTION} distribution has no metadata",
            hint=f"reinstall it: {GYM_INSTALL} --force-reinstall",
        ) from None


def _registry() -> Mapping[str, tuple[type, type]]:
    import_gym()  # importing the package registers every dataset (or says how to install it)
    factory = importlib.import_module("reasoning_gym.factory")
    datasets: Mapping[str, tuple[type, type]] = factory.DATASETS
    return datasets


def gym_datasets() -> list[str]:
    """Names of every reasoning-gym dataset, sorted (``composite`` included)."""
    import_gym()
    return sorted(_registry())


def _classes(name: str) -> tuple[type, type]:
    datasets = _registry()
    if name not in datasets:
        import difflib

        close = difflib.get_close_matches(name, list(datasets), n=1)
        did_you_mean = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"reasoning-gym has no dataset {name!r}{did_you_mean}",
            hint="`ponder tasks` lists them all (as gym:NAME)",
        )
    return datasets[name]


def dataset_options(name: str) -> list[str]:
    """The options of reasoning-gym dataset ``name``: its configuration's field names, sorted
    (for ``composite``, Ponder's ``mix``, ``configs``, ``seed`` and ``size``)."""
    if name == COMPOSITE:
        _classes(name)
        return ["configs", "mix", "seed", "size"]
    _, config_cls = _classes(name)
    return sorted(f.name for f in dataclasses.fields(config_cls))


def dataset_summary(name: str) -> str:
    """The first line of the docstring of dataset ``name``'s class (empty when it has none)."""
    dataset_cls, _ = _classes(name)
    doc = (dataset_cls.__doc__ or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


def _parse_mix(mix: object) -> list[tuple[str, float]]:
    """``"a:2,b:1"`` (or a JSON object ``{"a": 2, "b": 1}``) as (dataset, weight) pairs."""
    how = "write -T mix=NAME:WEIGHT,NAME:WEIGHT (e.g. -T mix=chain_sum:2,basic_arithmetic:1)"
    pairs: list[tuple[str, object]] = []
    if isinstance(mix, str):
        for part in mix.split(","):
            label, sep, given = part.strip().partition(":")
            pairs.append((label.strip(), given.strip() if sep else 1))
    elif isinstance(mix, Mapping):
        pairs = [(str(k), v) for k, v in mix.items()]
    else:
        raise ConfigError(f"mix must be a string such as 'chain_sum:2,leg_counting:1', got {mix!r}")
    parsed: list[tuple[str, float]] = []
    for name, weight in pairs:
        try:
            value = float(str(weight))
        except ValueError:
            raise ConfigError(
                f"mix weight of {name!r} is not a number: {weight!r}", hint=how
            ) from None
        if not name or not 0 < value < float("inf"):
            raise ConfigError(
                f"mix entry {name!r}:{weight!r}: need a dataset name and a weight > 0", hint=how
            )
        if name == COMPOSITE:
            raise ConfigError("a mix cannot contain composite itself", hint=how)
        if name in (n for n, _ in parsed):
            raise ConfigError(f"mix names {name!r} twice", hint=how)
        parsed.append((name, value))
    if not parsed:
        raise ConfigError("mix is empty", hint=how)
    return parsed


def canonical_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` for dataset ``name`` checked and completed: Ponder's defaults for ``seed`` and
    ``size`` filled in, a ``mix`` written in one canonical form. The result is JSON-serialisable
    and rebuilds the same dataset (:func:`make_dataset`).

    Raises:
        ConfigError: an option the dataset does not take (the message lists the valid ones), or
            a malformed ``mix``.
    """
    valid = dataset_options(name)
    unknown = sorted(k for k in options if k not in valid)
    if unknown:
        which = ", ".join(repr(k) for k in unknown)
        hint = (
            "a mix is the dataset gym:composite: --task gym:composite -T mix=NAME:WEIGHT,..."
            if "mix" in unknown
            else f"drop {which}; `ponder tasks` lists each dataset's options"
        )
        raise ConfigError(
            f"reasoning-gym dataset {name!r} has no option {which}; valid options: "
            f"{', '.join(valid)} (and Ponder's own: system_prompt, stop, template)",
            hint=hint,
        )
    done: dict[str, Any] = {"seed": DEFAULT_SEED, "size": DEFAULT_SIZE, **options}
    for key in ("seed", "size"):
        value = done[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
    if done["size"] < 1:
        raise ConfigError(f"size must be at least 1, got {done['size']}")
    if name == COMPOSITE:
        if "mix" not in done:
            raise ConfigError(
                "gym:composite needs the option mix (which datasets, with which weights)",
                hint="e.g. -T mix=chain_sum:2,basic_arithmetic:1",
            )
        mix = _parse_mix(done["mix"])
        for sub, _ in mix:
            _classes(sub)  # an unknown name is named, with a close match
        done["mix"] = ",".join(f"{n}:{w:g}" for n, w in mix)
        configs = done.get("configs", {})
        if not isinstance(configs, Mapping) or not all(
            isinstance(v, Mapping) for v in configs.values()
        ):
            raise ConfigError(
                f"configs must map dataset names to their options, got {configs!r}",
                hint='e.g. -T \'configs={"chain_sum": {"min_terms": 2}}\'',
            )
        stray = sorted(set(configs) - {n for n, _ in mix})
        if stray:
            raise ConfigError(f"configs names {', '.join(stray)}, which the mix does not contain")
        for sub, sub_options in configs.items():
            canonical_options(sub, sub_options)  # checks the names; values are checked below
        if configs:
            done["configs"] = {k: dict(v) for k, v in sorted(configs.items())}
        else:
            done.pop("configs", None)
    return done


def _config_error(name: str, exc: BaseException) -> ConfigError:
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return ConfigError(
        f"invalid options for reasoning-gym dataset {name!r}: {what}",
        hint="fix the -T value(s); the dataset's configuration class checks them",
    )


def make_dataset(name: str, options: Mapping[str, Any]) -> Any:
    """Build reasoning-gym dataset ``name`` from options made by :func:`canonical_options`.

    Its configuration class checks the values (its ``validate()``).

    Raises:
        ConfigError: a value the configuration rejects (with its message).
    """
    gym = import_gym()
    done = canonical_options(name, options)
    try:
        if name != COMPOSITE:
            return gym.create_dataset(name, **done)
        composite = importlib.import_module("reasoning_gym.composite")
        configs = done.get("configs", {})
        specs = [
            composite.DatasetSpec(name=n, weight=w, config=dict(configs.get(n, {})))
            for n, w in _parse_mix(done["mix"])
        ]
        config = composite.CompositeConfig(size=done["size"], seed=done["seed"], datasets=specs)
        config.validate()
        return composite.CompositeDataset(config)
    # The generators check their options with assert, ValueError or TypeError (a wrong type).
    except (AssertionError, ValueError, TypeError, KeyError) as exc:
        raise _config_error(name, exc) from None


def dataset_config(dataset: Any) -> dict[str, Any]:
    """The full configuration of a built dataset (defaults included) as JSON-compatible data."""
    config = dataset.config
    is_instance = dataclasses.is_dataclass(config) and not isinstance(config, type)
    data = dataclasses.asdict(config) if is_instance else dict(vars(config))
    loaded: dict[str, Any] = json.loads(json.dumps(data, default=str, sort_keys=True))
    return loaded
