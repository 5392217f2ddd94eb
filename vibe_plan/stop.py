"""A process-wide record that a stop signal (SIGINT, SIGTERM) arrived. The CLI's handler raises an
exception too, but Python drops exceptions raised inside some callbacks (an import lock's weakref
callback, a destructor); writers check this record so that such a run never commits its files."""

from __future__ import annotations

_received: set[int] = set()


def request(signum: int) -> None:
    _received.add(signum)


def requested() -> set[int]:
    """The signals received since the last `clear()` (empty: none)."""
    return _received


def clear() -> None:
    _received.clear()
