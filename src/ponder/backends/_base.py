"""The Backend protocol."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ponder.records import Generation, Prompt, SamplingParams


@runtime_checkable
class Backend(Protocol):
    """Generates n completions of one prompt.

    Implementations must draw all n completions of a request in a way that lets the engine share the prompt
    (one request with ``n`` where the engine supports it) and must report per-completion token counts.
    ``params.seed`` is the seed for this request; the sampler derives it from the run's base seed.
    """

    @property
    def identity(self) -> str:
        """A stable string naming backend + model; part of a run's identity."""
        ...

    @property
    def max_batch(self) -> int:
        """How many sequences this backend decodes together efficiently (used to size requests)."""
        ...

    async def generate(self, prompt: Prompt, n: int, params: SamplingParams) -> Generation:
        """Return ``n`` completions of ``prompt``."""
        ...

    async def aclose(self) -> None:
        """Release engines, connections and threads."""
        ...
