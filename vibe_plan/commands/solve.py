"""`vibe solve`: parse options, plan (vibe_plan.placement.solve_run), write every file, render."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vibe_plan.commands.options import DispatchOpt, GpusOpt, OriginOpt, PhaseOpt, RoutingOpt
from vibe_plan.defaults import CPSAT_WORKERS, TIME_LIMIT_S


def solve(
    gpus: GpusOpt,
    routing: RoutingOpt,
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Placement JSON to write (vibe.placement/v1).", show_default=False
        ),
    ],
    redundant: Annotated[
        int,
        typer.Option(
            "--redundant",
            "-r",
            help="Redundant expert slots R; (experts + R) must divide by the GPU count.",
        ),
    ] = 0,
    nodes: Annotated[
        int | None,
        typer.Option(
            help="Nodes; default: distinct hosts in the GPU profile. GPUs split evenly in "
            "profile order."
        ),
    ] = None,
    groups: Annotated[
        int | None,
        typer.Option(
            help="Expert groups (group-limited routing); default: the routing profile's, else 1."
        ),
    ] = None,
    method: Annotated[
        str, typer.Option("--method", "-m", help="vibe | eplb | linear | round_robin.")
    ] = "vibe",
    group_locality: Annotated[
        bool,
        typer.Option(
            "--group-locality/--no-group-locality",
            help="vibe: keep each expert group inside one node when groups divide over nodes "
            "(as eplb does).",
        ),
    ] = True,
    time_limit: Annotated[
        float,
        typer.Option(
            "--time-limit",
            help="CP-SAT budget per layer (per node of a layer under group locality) in "
            "deterministic seconds, used only where the bounds do not yet certify the plan "
            "(below 1 s only where a short run can close the gap; from 1 s on every such "
            "layer); 0 turns CP-SAT off.",
        ),
    ] = TIME_LIMIT_S,
    workers: Annotated[
        int, typer.Option(help="CP-SAT workers (at least 2: its portfolio runs two searches).")
    ] = CPSAT_WORKERS,
    seed: Annotated[
        int, typer.Option(help="Seed for CP-SAT and the local search (0 to 2147483647).")
    ] = 0,
    jobs: Annotated[
        int | None,
        typer.Option(help="Layers solved in parallel processes; default: one per core."),
    ] = None,
    export: Annotated[
        list[str] | None,
        typer.Option(help="FORMAT=PATH, repeatable; formats sglang, trtllm, eplb."),
    ] = None,
    mtp_layers: Annotated[
        int | None,
        typer.Option(
            "--mtp-layers",
            help="MTP (next-n) layers the engine builds after the decoder layers; the trtllm "
            "export gives each a row. Default: the routing profile's meta.mtp_layers, else 0.",
            show_default=False,
        ),
    ] = None,
    dispatch: DispatchOpt = "even",
    token_origin: OriginOpt = "uniform",
    phase: PhaseOpt = "all",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Plan expert placement: heavy experts on fast GPUs, with a certified gap to optimal."""
    from vibe_plan.artifacts.io import check_distinct, check_writable
    from vibe_plan.console import console, progress, warn
    from vibe_plan.engines import export_placement, mtp_layer_count, parse_export_specs
    from vibe_plan.placement.render import solve_table
    from vibe_plan.placement.solve import SolveOptions
    from vibe_plan.placement.solve_run import solve_run

    specs = parse_export_specs(export or [])
    if mtp_layers is not None:
        mtp_layer_count(mtp_layers, {})  # a meaningless count fails before any work
    outputs = [("--out", out), *((f"--export {fmt}", path) for fmt, path in specs)]
    check_distinct(outputs, [("--gpus", gpus), ("--routing", routing)])
    for name, path in outputs:
        check_writable(path, name)
    opts = SolveOptions(
        method=method,
        redundant=redundant,
        nodes=nodes,
        groups=groups,
        group_locality=group_locality,
        time_limit=time_limit,
        workers=workers,
        seed=seed,
        jobs=jobs,
        dispatch=dispatch,
    )
    with progress(quiet) as bar:
        run = solve_run(gpus, routing, opts, token_origin, progress=bar, phase=phase)
    for note in run.notes:
        warn(note)
    meta = run.routing.meta
    for note in export_placement(
        run.result.placement,
        specs,
        run.routing.num_hidden_layers,
        out,
        mtp_layers=mtp_layer_count(mtp_layers, meta) if specs else 0,
        routing_meta=meta,
    ):
        warn(note)
    console.print(solve_table(run.result, run.others, run.wall_s))
    console.print(f"wrote {out}" + "".join(f", {p}" for _, p in specs))


# Typer keeps a docstring's line breaks; one string per paragraph reads well at any width.
solve.__doc__ = "\n\n".join(
    [
        "Plan expert placement: heavy experts on fast GPUs, with a certified gap to optimal.",
        "Writes the placement JSON (byte-identical for the same inputs and options) and any "
        "engine exports, and prints the plan next to eplb and linear under the same cost model.",
    ]
)
