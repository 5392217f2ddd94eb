"""`vibe simulate`: a discrete-event model of expert-parallel serving over vibe's own artefacts
(GPU profile, routing profile, placements, a request trace). See docs/simulate.md."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from vibe_plan.simulate.options import SimulateOptions

if TYPE_CHECKING:
    from vibe_plan.simulate.run import SimulateResult


def simulate_run(
    placements: list[Path],
    gpus: Path,
    routing: Path,
    trace: Path,
    opts: SimulateOptions,
    trace_format: str = "auto",
    max_requests: int = 0,
    output_len: int = 128,
    progress: Callable[[int, int], None] | None = None,
) -> SimulateResult:
    """`vibe simulate` as one call: read the profiles, the trace and every placement file (any
    format the engines module reads), then serve the trace with each placement at each rate.
    `progress(done, total)` counts finished requests over all placements and rates."""
    from vibe_plan.artifacts import load_gpu_profile, load_routing_profile
    from vibe_plan.artifacts.gpu_profile import check_model_fit
    from vibe_plan.cost.dispatch import Dispatch
    from vibe_plan.placement.evaluate import load_placements
    from vibe_plan.simulate.run import check_options, simulate
    from vibe_plan.simulate.workload import load_trace

    Dispatch(opts.dispatch)  # an unknown rule fails before any file is read
    check_options(opts)
    gp = load_gpu_profile(gpus)
    rp = load_routing_profile(routing)
    notes = check_model_fit(gp, gpus, rp.expert_shape, rp.num_experts, routing)
    plans, read_notes = load_placements(placements, gp, rp, gpus)
    notes += read_notes
    loaded = [(str(path), p) for path, p in zip(placements, plans, strict=True)]
    requests = load_trace(trace, max_requests, output_len, trace_format)
    result = simulate(gp, rp, loaded, requests, opts, progress)
    result.notes[:0] = notes
    return result


__all__ = ["SimulateOptions", "simulate_run"]
