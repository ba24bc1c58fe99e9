"""Export a stored run for training or analysis: :func:`export_run`."""

from __future__ import annotations

import typing
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from ponder.analysis import run_verifier
from ponder.errors import ConfigError
from ponder.export._formats import (
    SKIP_REASONS,
    ProblemSamples,
    RunSamples,
    Tally,
    dpo_records,
    flat_records,
    sample_records,
    sft_records,
)
from ponder.export._prompts import PromptBuilder, PromptSource, prompt_builder
from ponder.export._writers import write_jsonl, write_parquet
from ponder.records import Sample
from ponder.store import Store

ExportFormat = Literal["sft", "dpo", "jsonl", "parquet"]
FORMATS: tuple[str, ...] = typing.get_args(ExportFormat)


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and what it left out.

    Attributes:
        records: Records written (lines, rows, SFT examples or preference pairs).
        problems: Problems in the run.
        skipped_problems: Problems that gave no record, by reason (keys of ``SKIP_REASONS``).
        duplicates: Samples dropped as repeats of an identical text of the same problem.
        unverified: Samples without a verdict from ``verifier`` (left out of ``sft``/``dpo``).
        prompt_source: Where prompts came from (``stored``; or, for a run stored before prompts
            were, how they were rebuilt: ``task``, ``spec``, ``question``); None for the formats
            without prompts (``jsonl``, ``parquet``).
        prompt_note: Why prompts could not be rebuilt the best way, if so.
        out: The file written, or None for a stream.
    """

    run_id: str
    format: ExportFormat
    verifier: str
    records: int
    problems: int
    skipped_problems: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    unverified: int = 0
    prompt_source: PromptSource | None = None
    prompt_note: str = ""
    out: str | None = None

    @property
    def prompt_rebuilt(self) -> bool | None:
        return None if self.prompt_source is None else self.prompt_source != "question"

    def summary(self) -> str:
        """One line for people: what was written, and what was skipped and why."""
        where = f" to {self.out}" if self.out else ""
        parts = [
            f"wrote {_count(self.records, f'{self.format} record')} of run {self.run_id} "
            f"(verifier {self.verifier}){where}"
        ]
        if self.skipped_problems:
            reasons = ", ".join(
                f"{n} with {SKIP_REASONS[k]}" for k, n in sorted(self.skipped_problems.items())
            )
            skipped = _count(sum(self.skipped_problems.values()), "problem")
            parts.append(f"skipped {skipped} ({reasons})")
        if self.duplicates:
            parts.append(f"dropped {_count(self.duplicates, 'duplicate sample')}")
        if self.unverified:
            parts.append(f"{_count(self.unverified, 'sample')} without a verdict")
        if self.prompt_source == "question":
            parts.append(f"prompts NOT rebuilt, the bare question stands in: {self.prompt_note}")
        return "; ".join(parts)


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def load_samples(store: Store, run_ref: str, verifier: str | None, prompts: bool) -> RunSamples:
    """A run's problems (in run order), samples (in index order) and verdicts from one verifier."""
    info = store.get_run(run_ref)
    name = run_verifier(store, info.id, verifier)
    verdicts = store.verdicts(info.id, name)
    by_problem: dict[str, list[Sample]] = defaultdict(list)
    for s in store.samples(info.id):
        by_problem[s.problem_id].append(s)
    problems = store.problems(info.id)
    groups = [
        ProblemSamples(
            p,
            [
                (s, verdicts.get(s.id) if s.id is not None else None)
                for s in sorted(by_problem.get(p.id, []), key=lambda s: s.index)
            ],
        )
        for p in problems
    ]
    builder = (
        prompt_builder(info.spec.task, store.prompts(info.id), [p.id for p in problems])
        if prompts
        else PromptBuilder("question")
    )
    return RunSamples(info.id, info.spec, name, groups, builder)


def export_run(
    store: Store,
    run_ref: str,
    fmt: ExportFormat,
    out: IO[str] | Path,
    *,
    verifier: str | None = None,
    max_pairs_per_problem: int | None = 4,
    seed: int = 0,
    dedupe: bool = True,
    include_unparsed: bool = False,
) -> ExportReport:
    """Export a run's verified samples as training data or as a table.

    Formats:

    * ``jsonl``: every sample with its problem, run (model, task) and verdict (null if none).
    * ``parquet``: the same records as typed Parquet columns, the verdict flattened into
      ``verdict_status``, ``verdict_extracted``, ``verdict_score``, ``verdict_detail``.
    * ``sft``: each verified-correct sample as a chat example, ``{"messages": [...the prompt the
      model saw..., {"role": "assistant", "content": text}], "metadata": {...}}``.
    * ``dpo``: preference pairs, ``{"prompt": [...], "chosen": [assistant], "rejected":
      [assistant], "metadata": {...}}``: correct against incorrect samples of the same problem.

    Prompts are those stored with the run's problems; a run stored before prompts were (schema
    version 0) has them rebuilt from its task spec (see :mod:`ponder.export._prompts`); when that is
    impossible the prompt is the bare question and metadata says ``"prompt_rebuilt": false``.

    Args:
        store: The database holding the run.
        run_ref: Run id or unique id prefix.
        fmt: ``sft``, ``dpo``, ``jsonl`` or ``parquet``.
        out: A text stream, or a file path (required for ``parquet``); a file is replaced only
            once the export has succeeded.
        verifier: Whose verdicts to use (default: the run's first verifier).
        max_pairs_per_problem: ``dpo``: at most this many pairs per problem (None: all).
        seed: ``dpo``: seed of the pair choice.
        dedupe: ``sft``/``dpo``: use each distinct text (ignoring surrounding whitespace) once
            per problem.
        include_unparsed: ``dpo``: unparsed samples (no final answer found) may be rejected too.

    Raises:
        ConfigError: an unknown format, a cap below 1, or ``parquet`` to a stream.
        UserError: the run does not exist, or has no verdicts (from ``verifier``).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if max_pairs_per_problem is not None and max_pairs_per_problem < 1:
        raise ConfigError(
            f"max_pairs_per_problem must be >= 1, got {max_pairs_per_problem}",
            hint="give a positive cap, or none for all pairs",
        )
    if fmt == "parquet" and not isinstance(out, Path):
        raise ConfigError("Parquet export needs an output file", hint="pass -o FILE.parquet")
    run = load_samples(store, run_ref, verifier, prompts=fmt in ("sft", "dpo"))
    tally = Tally()
    records: Iterator[dict[str, Any]]
    if fmt == "sft":
        records = sft_records(run, tally, dedupe=dedupe)
    elif fmt == "dpo":
        records = dpo_records(
            run,
            tally,
            max_pairs_per_problem=max_pairs_per_problem,
            seed=seed,
            dedupe=dedupe,
            include_unparsed=include_unparsed,
        )
    elif fmt == "jsonl":
        records = sample_records(run, tally)
    else:
        records = flat_records(run, tally)
    if fmt == "parquet":
        assert isinstance(out, Path)
        count = write_parquet(records, out)
    else:
        count = write_jsonl(records, out)
    with_prompts = fmt in ("sft", "dpo")
    return ExportReport(
        run_id=run.run_id,
        format=fmt,
        verifier=run.verifier,
        records=count,
        problems=len(run.problems),
        skipped_problems=dict(tally.skipped_problems),
        duplicates=tally.duplicates,
        unverified=tally.unverified,
        prompt_source=run.prompts.source if with_prompts else None,
        prompt_note=run.prompts.reason if with_prompts else "",
        out=str(out) if isinstance(out, Path) else None,
    )
