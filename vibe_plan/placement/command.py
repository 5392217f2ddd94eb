"""CLI entries for `vibe solve` and `vibe evaluate`."""

from __future__ import annotations

from vibe_plan.errors import VibeError


def solve() -> None:
    """Placement (in progress)."""
    raise VibeError("solve is not implemented yet")


def evaluate() -> None:
    """Evaluate (in progress)."""
    raise VibeError("evaluate is not implemented yet")
