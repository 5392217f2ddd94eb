"""The only code that knows vibe-plan's file formats: load, validate, save the three artefacts."""

from vibe_plan.artifacts.gpu_profile import (
    GPU_SCHEMA,
    ExpertShape,
    GpuCurve,
    GpuEntry,
    GpuProfile,
    load_gpu_profile,
    save_gpu_profile,
)
from vibe_plan.artifacts.io import atomic_write, sha256_file
from vibe_plan.artifacts.placement import (
    PLACEMENT_SCHEMA,
    Placement,
    load_placement,
    save_placement,
)
from vibe_plan.artifacts.routing_profile import (
    ROUTING_SCHEMA,
    RoutingProfile,
    load_routing_profile,
    save_routing_profile,
)

__all__ = [
    "GPU_SCHEMA",
    "PLACEMENT_SCHEMA",
    "ROUTING_SCHEMA",
    "ExpertShape",
    "GpuCurve",
    "GpuEntry",
    "GpuProfile",
    "Placement",
    "RoutingProfile",
    "atomic_write",
    "load_gpu_profile",
    "load_placement",
    "load_routing_profile",
    "save_gpu_profile",
    "save_placement",
    "save_routing_profile",
    "sha256_file",
]
