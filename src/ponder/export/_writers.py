"""Writing records out: JSON lines (to a stream or a file) and Parquet (to a file)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ponder.errors import UserError

PARQUET_BATCH = 4096
"""Rows per Parquet row group written at once."""

# (column, Arrow type name): the Parquet columns, typed; every column is nullable.
PARQUET_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "int64"),
    ("run_id", "string"),
    ("problem_id", "string"),
    ("index", "int64"),
    ("text", "string"),
    ("finish_reason", "string"),
    ("completion_tokens", "int64"),
    ("prompt_tokens", "int64"),
    ("latency_s", "float64"),
    ("seed", "int64"),
    ("mean_logprob", "float64"),
    ("node", "string"),
    ("question", "string"),
    ("reference", "string"),
    ("model", "string"),
    ("task", "string"),
    ("verifier", "string"),
    ("verdict_status", "string"),
    ("verdict_extracted", "string"),
    ("verdict_score", "float64"),
    ("verdict_detail", "string"),
)


@contextmanager
def _replacing(path: Path, mode: str) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; it replaces ``path`` only if the block succeeds."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if path.parent != Path():
            path.parent.mkdir(parents=True, exist_ok=True)
        fh = tmp.open(mode, encoding=None if "b" in mode else "utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with fh:
            yield fh
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_jsonl(records: Iterable[dict[str, Any]], out: IO[str] | Path) -> int:
    """Write one JSON object per line to ``out`` (a text stream, or a file replaced on success)."""
    if isinstance(out, Path):
        with _replacing(out, "w") as fh:
            return write_jsonl(records, fh)
    count = 0
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        count += 1
    return count


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(
            "Parquet export needs pyarrow, which is not installed",
            hint='pip install "pyarrow>=15"',
        ) from None
    return pa, pq


def write_parquet(records: Iterable[dict[str, Any]], path: Path) -> int:
    """Write flat records (see :data:`PARQUET_COLUMNS`) to a Parquet file, replaced on success."""
    pa, pq = _pyarrow()
    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in PARQUET_COLUMNS])
    names = [name for name, _ in PARQUET_COLUMNS]
    count = 0
    with _replacing(path, "wb") as fh, pq.ParquetWriter(fh, schema) as writer:

        def flush(rows: list[dict[str, Any]]) -> None:
            table = pa.Table.from_pylist(
                [{k: r.get(k) for k in names} for r in rows], schema=schema
            )
            writer.write_table(table)

        batch: list[dict[str, Any]] = []
        for record in records:
            batch.append(record)
            count += 1
            if len(batch) == PARQUET_BATCH:
                flush(batch)
                batch = []
        if batch or count == 0:
            flush(batch)
    return count
