"""Reading a file that the user named (a data file, a system config)."""

from __future__ import annotations

from pathlib import Path

from ponder.errors import NotFoundError, UserError


def read_user_file(path: Path, what: str, *, hint: str) -> bytes:
    """The bytes of ``path``, which the user named as a ``what`` (``"data file"``).

    Raises:
        NotFoundError: the file does not exist (``hint`` says where the path came from).
        UserError: it cannot be read (a folder, no permission).
    """
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"{what} {path} does not exist", hint=hint) from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
