"""Export runs for training and analysis: inference results fed back into training.

:func:`export_run` writes a run's samples as ``jsonl`` or ``parquet`` tables, as chat-format SFT
examples of its verified-correct samples (``sft``), or as preference pairs of correct against
incorrect samples (``dpo``), with the prompts exactly as the model saw them (stored with the run;
rebuilt for runs stored before prompts were).
"""

from ponder.export._export import FORMATS, ExportFormat, ExportReport, export_run
from ponder.export._formats import SKIP_REASONS, pick_pairs
from ponder.export._prompts import PromptBuilder, PromptSource, prompt_builder
from ponder.export._writers import PARQUET_COLUMNS

__all__ = [
    "FORMATS",
    "PARQUET_COLUMNS",
    "SKIP_REASONS",
    "ExportFormat",
    "ExportReport",
    "PromptBuilder",
    "PromptSource",
    "export_run",
    "pick_pairs",
    "prompt_builder",
]
