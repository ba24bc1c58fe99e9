"""Errors raised while running a system."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ponder.errors import RunError

if TYPE_CHECKING:
    from ponder.systems._trace import Trace


class ComponentError(RunError):
    """A component failed while running (a backend error after the backend's own retries).

    Attributes:
        layer: Index of the layer (0-based).
        index: Index of the component within its layer (0-based).
        component: The component's label.
        model: Identity of the backend that failed, when a backend call failed.
        trace: What the system did up to the failure (set by the system before it re-raises).
    """

    def __init__(
        self,
        message: str,
        *,
        layer: int,
        index: int,
        component: str,
        model: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.layer = layer
        self.index = index
        self.component = component
        self.model = model
        self.trace: Trace | None = None
        where = f"layers[{layer}][{index}] ({component}"
        where += f", model {model})" if model else ")"
        super().__init__(f"{where}: {message}", hint=hint)
