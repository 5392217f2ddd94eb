"""The one exception type for user errors: the CLI prints `error: <message>` and exits 2."""

from __future__ import annotations


class VibeError(Exception):
    """Bad input or an impossible request; the message says what is wrong and how to fix it."""
