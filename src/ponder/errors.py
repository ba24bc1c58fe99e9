"""Ponder's exception hierarchy.

Two families, so that callers (and the CLI) can tell them apart:

* :class:`UserError`: the input is wrong (a config field, a name, a file). The message says what is wrong,
  why, and how to fix it. Retrying never helps.
* :class:`RunError`: something failed while doing correct work (a backend outage after retries, a full disk,
  a locked database). The message carries the underlying cause.
"""

from __future__ import annotations


class PonderError(Exception):
    """Base class of every error Ponder raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  hint: {hint}")

    def __reduce__(self) -> tuple[object, ...]:
        # Errors cross process boundaries (raised on a Ray worker, re-raised by the driver): keep
        # the message, the hint and any other attribute apart, whatever the subclass's __init__.
        return (_rebuild, (type(self), str(self), self.__dict__))


def _rebuild(cls: type[PonderError], text: str, state: dict[str, object]) -> PonderError:
    err = cls.__new__(cls)
    Exception.__init__(err, text)
    err.__dict__.update(state)
    return err


class UserError(PonderError):
    """Bad input: a wrong name, field, file or parameter. Never retried."""


class ConfigError(UserError):
    """A configuration value is invalid; the message names the field and the fix."""


class NotFoundError(UserError):
    """A named thing (model, task, run, file) does not exist."""


class UnknownNameError(NotFoundError):
    """No plugin of a kind (backend, task, verifier, ...) is registered under a name.

    The message lists the valid names and suggests the closest one.
    """

    def __init__(
        self, message: str, *, kind: str, name: str, choices: list[str], hint: str | None = None
    ) -> None:
        self.kind = kind
        self.name = name
        self.choices = choices
        super().__init__(message, hint=hint)


class DuplicateNameError(UserError):
    """Two different objects claim one name of one plugin kind (an overwrite would hide one)."""


class PluginLoadError(UserError):
    """An installed plugin failed to load; only lookups of its own names fail.

    The message names the distribution that provides it and the cause.
    """


class ModelNotInstalledError(UserError):
    """A registered model's package is missing; the hint is the exact install command."""


class DataError(UserError):
    """A user data file is malformed; the message names the file and line."""


class RunError(PonderError):
    """A failure while doing valid work."""


class BackendError(RunError):
    """A backend failed (after its own retries, where retrying made sense)."""

    def __init__(
        self, message: str, *, status_code: int | None = None, hint: str | None = None
    ) -> None:
        self.status_code = status_code
        super().__init__(message, hint=hint)


class BackendRequestError(BackendError, UserError):
    """The backend rejected the request itself (HTTP 400/401/403/404): retrying cannot succeed."""


class StoreError(RunError):
    """The sample store could not be read or written (locked database, full disk, corrupt file)."""


class VerifyError(RunError):
    """A verifier failed as a whole (not one sample's check, which becomes a verdict)."""
