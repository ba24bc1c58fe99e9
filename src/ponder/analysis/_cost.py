"""What a run cost, and what drawing k samples per problem would cost: tokens, FLOPs, dollars.

FLOPs use the standard dense-transformer estimate of ``2 * params`` per processed token (one multiply and
one add per weight in the forward pass), for prompt and completion tokens alike. It leaves out attention
over the context (small next to the weights at these lengths) and any hardware inefficiency: it is the work
the model requires, not what a device spent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ponder.analysis._data import RunData
from ponder.errors import UserError
from ponder.models import MODELS


@dataclass(frozen=True)
class Prices:
    """Dollar prices per million tokens (0 for a local model, whose cost is compute, not tokens)."""

    prompt_per_million: float = 0.0
    completion_per_million: float = 0.0

    def dollars(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (
            prompt_tokens * self.prompt_per_million
            + completion_tokens * self.completion_per_million
        ) / 1e6


@dataclass(frozen=True)
class CostSummary:
    """The cost of the samples a run holds.

    Latency: each sample records the wall time of the request that produced it, and a request may produce
    several samples concurrently with other requests, so no sum of per-sample latencies is the run's wall
    time. ``sample_latency_s`` is therefore the mean per-sample (i.e. per-request, weighted by samples)
    latency, and ``wall_s`` is the elapsed time only when the caller knows it (e.g. from the sampling
    report), else NaN.
    """

    problems: int
    samples: int
    prompt_tokens: int
    """Prompt tokens evaluated (each request's prompt evaluation is split over its samples by the store)."""
    completion_tokens: int
    sample_latency_s: float
    """Mean latency of the request behind each sample (NaN without samples)."""
    wall_s: float
    """Elapsed wall time, when the caller supplied it; NaN otherwise."""
    params: int | None
    flops: float
    """``2 * params * (prompt_tokens + completion_tokens)``; NaN when the parameter count is unknown."""
    dollars: float

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def model_params(model_identity: str) -> int | None:
    """The parameter count of a run's model, from its backend identity, when Ponder knows it.

    Only registered embedded models are known: ``llamacpp:NAME@SHA`` gives ``MODELS[NAME].params``. The
    name decides, not the weights hash, since re-quantised weights keep the parameter count. Local ``.gguf``
    paths and ``openai:`` endpoints give None (pass ``params`` explicitly to get FLOPs for them).
    """
    backend, _, rest = model_identity.partition(":")
    if backend != "llamacpp" or "@" not in rest:
        return None
    name = rest.rsplit("@", 1)[0]
    entry = MODELS.get(name)
    return entry.params if entry is not None else None


def _flops(params: int | None, tokens: float | NDArray[np.float64]) -> float | NDArray[np.float64]:
    if params is None:
        return np.full_like(tokens, np.nan) if isinstance(tokens, np.ndarray) else math.nan
    return 2.0 * params * tokens


def cost_summary(
    data: RunData,
    *,
    prices: Prices = Prices(),
    params: int | None = None,
    wall_s: float | None = None,
) -> CostSummary:
    """Tokens, FLOPs and dollars of every verified sample in ``data``.

    Args:
        data: the run.
        prices: per-million-token prices.
        params: the model's parameter count; by default :func:`model_params` of the run's model.
        wall_s: the run's elapsed time, if known.
    """
    if params is None:
        params = model_params(data.spec.model)
    prompt = sum(int(p.prompt_tokens.sum()) for p in data.problems)
    completion = sum(int(p.completion_tokens.sum()) for p in data.problems)
    samples = sum(p.n for p in data.problems)
    latency = (
        float(np.concatenate([p.latency_s for p in data.problems]).mean()) if samples else math.nan
    )
    return CostSummary(
        problems=len(data.problems),
        samples=samples,
        prompt_tokens=prompt,
        completion_tokens=completion,
        sample_latency_s=latency,
        wall_s=math.nan if wall_s is None else float(wall_s),
        params=params,
        flops=float(_flops(params, float(prompt + completion))),
        dollars=prices.dollars(prompt, completion),
    )


def cost_curve(
    data: RunData,
    ks: ArrayLike,
    *,
    prices: Prices = Prices(),
    params: int | None = None,
) -> dict[str, NDArray[np.float64]]:
    """Expected cost of drawing k samples for every problem of the run, for each k in ``ks``.

    The model is linear in k, per problem: each sample costs what the run's samples of that problem cost on
    average, in completion tokens and in prompt tokens. The prompt share is what the store recorded per
    sample: each request's prompt evaluation divided over the samples it returned, so the estimate assumes
    requests batch samples as this run did (a backend that evaluates the prompt once for all k would cost
    less prompt, one that re-evaluates it per sample more). Totals are summed over the problems that have
    at least one sample; the others carry no cost estimate and are left out.

    Args:
        data: the run whose per-sample costs are extrapolated.
        ks: budgets (samples per problem, >= 0).
        prices: per-million-token prices.
        params: parameter count for FLOPs; by default :func:`model_params` of the run's model.

    Returns:
        Arrays of length ``len(ks)``: ``completion_tokens``, ``prompt_tokens``, ``total_tokens``,
        ``flops`` (NaN when the parameter count is unknown) and ``dollars``.
    """
    k = np.atleast_1d(np.asarray(ks, dtype=np.float64))
    if k.ndim != 1 or not np.all(np.isfinite(k)) or np.any(k < 0):
        raise UserError("ks must be a 1-D array of finite budgets >= 0")
    if params is None:
        params = model_params(data.spec.model)
    sampled = [p for p in data.problems if p.n > 0]
    completion_per_k = float(sum(p.completion_tokens.mean() for p in sampled))
    prompt_per_k = float(sum(p.prompt_tokens.mean() for p in sampled))
    completion = completion_per_k * k
    prompt = prompt_per_k * k
    total = completion + prompt
    flops = np.asarray(_flops(params, total), dtype=np.float64)
    dollars = (
        prompt * prices.prompt_per_million + completion * prices.completion_per_million
    ) / 1e6
    return {
        "completion_tokens": completion,
        "prompt_tokens": prompt,
        "total_tokens": total,
        "flops": flops,
        "dollars": dollars,
    }
