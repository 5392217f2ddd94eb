"""CLI entry for `vibe profile-gpus` (thin; heavy imports happen inside)."""

from __future__ import annotations

from vibe_plan.errors import VibeError


def profile_gpus() -> None:
    """Measure each GPU's grouped-GEMM time curve (not implemented yet)."""
    raise VibeError("profile-gpus is not implemented yet")
