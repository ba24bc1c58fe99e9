"""``generate``: n samples from one model, or from an ensemble of models."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ponder._aio import gather_all
from ponder.records import Completion, Message
from ponder.systems._component import Component, Delta, ModelComponentConfig, register_component
from ponder.systems._context import RunContext
from ponder.systems._models import ModelRef, describe_ref
from ponder.systems._prompts import render, template
from ponder.systems._state import State
from ponder.systems.components._common import sample


class EnsembleMember(BaseModel):
    """One model of an ensemble, with its own sample count (and optionally its own sampling)."""

    model_config = ConfigDict(extra="forbid")

    model: ModelRef | None = None
    n: int = Field(1, ge=1, le=100_000)
    temperature: float | None = Field(None, ge=0.0, le=5.0)
    max_tokens: int | None = Field(None, ge=1, le=131072)


class GenerateConfig(ModelComponentConfig):
    """Sample answers to the query.

    With ``model`` (or the system default): ``n`` samples in one backend request, so the prompt is
    evaluated once. With ``models``: each member's ``n`` samples, members concurrently; candidates
    come in member order.
    """

    type: Literal["generate"] = "generate"
    n: int = Field(1, ge=1, le=100_000, description="Samples (single model).")
    models: list[EnsembleMember] | None = Field(
        None, min_length=1, description="An ensemble; each member has its own model and n."
    )
    temperature: float = Field(0.7, ge=0.0, le=5.0)
    cot: bool = Field(False, description="Ask for step-by-step reasoning before the answer.")
    use_unit_tests: bool = Field(
        True, description="Show unit tests written by an earlier layer (if any) with the query."
    )

    needs_candidates: ClassVar[bool] = False
    makes_candidates: ClassVar[bool] = True

    @model_validator(mode="after")
    def _one_source(self) -> GenerateConfig:
        if self.models is not None and self.model is not None:
            raise ValueError("set either model (one model) or models (an ensemble), not both")
        # n left at 1 is what a dumped config holds (a reload must accept its own dump).
        if self.models is not None and self.n != 1:
            raise ValueError("with models, set n on each member instead of on the component")
        return self

    def members(self) -> list[EnsembleMember]:
        if self.models is not None:
            return self.models
        return [EnsembleMember(model=self.model, n=self.n)]

    def model_refs(self) -> list[ModelRef | None]:
        return [m.model for m in self.members()]

    def describe(self) -> str:
        parts = [
            f"n={m.n}" if m.model is None else f"{describe_ref(m.model)} x{m.n}"
            for m in self.members()
        ]
        extra = ", cot" if self.cot else ""
        return f"generate({', '.join(parts)}{extra})"


@register_component("generate")
class Generate(Component[GenerateConfig]):
    config_type = GenerateConfig

    def prompt(self, state: State) -> list[Message]:
        """The query as this component sends it: template, CoT and unit tests applied."""
        cfg = self.config
        messages = list(state.messages)
        if messages[-1].role == "tool":
            # A tool's result, sent back in an agent loop, goes to the model as it is.
            return self._with_system(messages)
        text = messages[-1].content
        if cfg.template is not None:
            text = render(cfg.template, query=text)
        if cfg.cot:
            text += "\n\n" + template("cot")
        if cfg.use_unit_tests and state.unit_tests:
            tests = "\n".join(f"- {t}" for t in state.unit_tests)
            text += "\n\n" + render(template("generate_unit_tests"), tests=tests)
        messages[-1] = Message(role="user", content=text)
        return self._with_system(messages)

    def _with_system(self, messages: list[Message]) -> list[Message]:
        if self.config.system_prompt is not None:
            messages = [m for m in messages if m.role != "system"]
            if self.config.system_prompt:
                messages.insert(0, Message(role="system", content=self.config.system_prompt))
        return messages

    async def run(self, state: State, ctx: RunContext) -> Delta:
        cfg = self.config
        prompt = self.prompt(state)
        members = cfg.members()
        backends = [ctx.backend(m.model) for m in members]

        async def draw(i: int) -> list[Completion]:
            member = members[i]
            purpose = "generate" if len(members) == 1 else f"generate (member {i + 1})"
            return await sample(
                ctx,
                backends[i],
                prompt,
                member.n,
                lambda chunk: cfg.sampling(
                    ctx.seed_for("generate", i, chunk),
                    temperature=member.temperature,
                    max_tokens=member.max_tokens,
                ),
                purpose,
            )

        per_member = await gather_all(draw(i) for i in range(len(members)))
        # Ids are assigned after every member finished, in member order, so they do not depend
        # on which backend answered first.
        new = [
            ctx.candidate(c.text, action="generated", model=backend.identity, completion=c)
            for backend, completions in zip(backends, per_member, strict=True)
            for c in completions
        ]
        return Delta(new=new)
