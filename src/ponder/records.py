"""Typed records that flow through Ponder: problems, sampling parameters, completions, samples, verdicts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "error", "unknown"]
VerdictStatus = Literal["correct", "incorrect", "unparsed", "error"]


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(frozen=True)

    role: Role
    content: str


Prompt = str | list[Message]
"""A raw text prompt (completion endpoint) or a list of chat messages."""


class Problem(BaseModel):
    """One task item: what to ask and what counts as right."""

    model_config = ConfigDict(frozen=True)

    id: str
    question: str
    reference: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class SamplingParams(BaseModel):
    """Decoding parameters. Validated before any generation starts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(0.7, ge=0.0, le=5.0, description="0 means greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, description="Keep the k most likely tokens; 0 disables.")
    min_p: float = Field(0.0, ge=0.0, le=1.0, description="Drop tokens below min_p x the top one.")
    max_tokens: int = Field(512, ge=1, le=131072)
    stop: tuple[str, ...] = ()
    seed: int = Field(0, ge=0, lt=2**31, description="Base seed; each request derives its own.")

    @model_validator(mode="after")
    def _check_stop(self) -> SamplingParams:
        if any(s == "" for s in self.stop):
            raise ValueError("stop strings must be non-empty")
        return self


class Completion(BaseModel):
    """One generated sample as the backend returned it."""

    text: str
    finish_reason: FinishReason = "unknown"
    completion_tokens: int = Field(0, ge=0)
    latency_s: float = Field(0.0, ge=0.0, description="Wall time of the request that produced it.")
    mean_logprob: float | None = None


class Generation(BaseModel):
    """The answer to one request for n completions of one prompt."""

    completions: list[Completion]
    prompt_tokens: int = Field(0, ge=0, description="Prompt tokens evaluated for this request.")
    latency_s: float = Field(0.0, ge=0.0)


class Sample(BaseModel):
    """A stored completion of one problem in one run."""

    id: int | None = None
    run_id: str
    problem_id: str
    index: int = Field(ge=0, description="Position among this problem's samples (0-based).")
    text: str
    finish_reason: FinishReason
    completion_tokens: int
    prompt_tokens: int
    latency_s: float
    seed: int
    mean_logprob: float | None = None


class Verdict(BaseModel):
    """A verifier's judgement of one sample."""

    status: VerdictStatus
    extracted: str | None = None
    score: float | None = None
    detail: str = ""
