"""The one exception type for user errors: the CLI prints `error: <message>` and exits 2."""

from __future__ import annotations


class VibeError(Exception):
    """Bad input or an impossible request; the message says what is wrong and how to fix it."""

    @classmethod
    def at(cls, path: object, field: str, msg: str) -> VibeError:
        """An error about one field of one file: `<path>: <field>: <msg>`."""
        return cls(f"{path}: {field}: {msg}")


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (or its type name), for one-line errors."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
