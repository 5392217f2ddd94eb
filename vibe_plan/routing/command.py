"""CLI entries for `vibe profile-routing` and `vibe import-routing` (thin; heavy imports inside)."""

from __future__ import annotations

from vibe_plan.errors import VibeError


def profile_routing() -> None:
    """Replay a prompt trace through a model's routers (not implemented yet)."""
    raise VibeError("profile-routing is not implemented yet")


def import_routing() -> None:
    """Turn an engine's recorded expert loads into a routing profile (not implemented yet)."""
    raise VibeError("import-routing is not implemented yet")
