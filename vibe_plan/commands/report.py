"""`vibe report`: parse options, write the HTML report (vibe_plan.report), say where it is."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vibe_plan.commands.options import (
    PLACEMENT_FORMATS,
    DispatchOpt,
    GpusOpt,
    NodesOpt,
    OriginOpt,
    RoutingOpt,
)


def report(
    placements: Annotated[
        list[Path],
        typer.Argument(
            help=f"Placement files: {PLACEMENT_FORMATS}. The first is the reference (vs_first).",
            show_default=False,
        ),
    ],
    gpus: GpusOpt,
    routing: RoutingOpt,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Folder to write (index.html and its PNG figures). An existing folder is "
            "replaced only if vibe report wrote it (or it is empty).",
            show_default=False,
        ),
    ],
    simulation: Annotated[
        Path | None,
        typer.Option(
            help="Summary CSV of `vibe simulate --csv`: SLO attainment and P90 TTFT vs rate; "
            "TTFT distributions from <stem>.requests.csv beside it, where present.",
            show_default=False,
        ),
    ] = None,
    dispatch: DispatchOpt = "even",
    token_origin: OriginOpt = "uniform",
    nodes: NodesOpt = None,
    title: Annotated[
        str | None,
        typer.Option(help="Page title; default: from the routing profile's model name."),
    ] = None,
) -> None:
    """Write one HTML page (figures beside it) with GPU curves, expert load, per-GPU time per
    layer of each placement, the evaluate table and, with --simulation, SLO and TTFT plots."""
    from vibe_plan.console import console, warn
    from vibe_plan.report import write_report

    res = write_report(
        out, gpus, routing, placements, simulation, dispatch, token_origin, nodes, title
    )
    for note in res.notes:
        warn(note)
    console.print(f"wrote {res.index} ({len(res.files) - 1} figures); open it in a browser")


report.__doc__ = "\n\n".join(
    [
        "Write one HTML page (PNG figures beside it) with the whole picture of a plan.",
        "GPU time curves relative to the fastest GPU; expert load and its batch-to-batch "
        "variation; per-GPU predicted time per layer of each placement and the imbalance; the "
        "evaluate table; with --simulation, SLO attainment and P90 TTFT vs rate and TTFT "
        "distributions. Needs matplotlib (the report extra of vibe-plan).",
    ]
)
