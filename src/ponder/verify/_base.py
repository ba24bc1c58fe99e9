"""The Verifier protocol: judge many samples against their reference answers."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from ponder.records import Verdict


@runtime_checkable
class Verifier(Protocol):
    """Turns (reference answer, sample text) pairs into verdicts.

    A failed check of one sample is that sample's ``error`` verdict; only a failure of the verifier
    as a whole raises (:class:`ponder.errors.VerifyError`). Verifiers may hold processes or
    connections, so they are closed after use, directly or by leaving a ``with`` block.
    """

    @property
    def name(self) -> str:
        """Stable name under which verdicts are stored; changes when verdicts could change."""
        ...

    def verify_many(self, items: Sequence[tuple[str | None, str]]) -> list[Verdict]:
        """One verdict per ``(reference, sample text)`` item, in the same order.

        A ``None`` reference gives an ``error`` verdict ("no reference answer").
        """
        ...

    def close(self) -> None:
        """Release processes and other resources; idempotent."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
