"""The ``with`` protocol of everything that holds processes, files or connections until closed."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class Closing(ABC):
    """A resource released by :meth:`close`: leaving a ``with`` block closes it.

    Verifiers, sandboxes, systems and the store share this one lifecycle; each implements only
    :meth:`close`.
    """

    @abstractmethod
    def close(self) -> None:
        """Release what the object holds; idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
