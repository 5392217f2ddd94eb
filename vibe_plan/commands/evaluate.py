"""`vibe evaluate`: parse options, score (vibe_plan.placement.evaluate), render, write the CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vibe_plan.commands.options import (
    DispatchOpt,
    GpusOpt,
    NodesOpt,
    OriginOpt,
    PhaseOpt,
    PlacementsArg,
    RoutingOpt,
)


def evaluate(
    placements: PlacementsArg,
    gpus: GpusOpt,
    routing: RoutingOpt,
    csv: Annotated[Path | None, typer.Option(help="Also write the table as CSV.")] = None,
    dispatch: DispatchOpt = "even",
    token_origin: OriginOpt = "uniform",
    nodes: NodesOpt = None,
    phase: PhaseOpt = "all",
) -> None:
    """Score placements on each batch of a routing profile (use batches the plan did not see)."""
    from vibe_plan.artifacts.io import atomic_write, check_distinct, check_writable
    from vibe_plan.console import console, warn
    from vibe_plan.errors import VibeError
    from vibe_plan.placement.evaluate import evaluate_run, rows_csv, score_rows
    from vibe_plan.placement.render import evaluate_table

    if nodes is not None and nodes < 1:
        raise VibeError(f"--nodes is {nodes}; it must be at least 1")
    if csv is not None:
        inputs = [
            ("--gpus", gpus),
            ("--routing", routing),
            *(("a placement", p) for p in placements),
        ]
        check_distinct([("--csv", csv)], inputs)
        check_writable(csv, "--csv")
    run = evaluate_run(placements, gpus, routing, dispatch, token_origin, nodes, phase)
    for note in run.notes:
        warn(note)
    rows = score_rows(run.scores)
    console.print(evaluate_table(rows, run.rule.rule))
    if csv is not None:
        atomic_write(csv, rows_csv(rows))
        console.print(f"wrote {csv}")


# Typer keeps a docstring's line breaks; one string per paragraph reads well at any width.
evaluate.__doc__ = "\n\n".join(
    [
        "Score placements on each batch of a routing profile (use batches the plan did not see).",
        "Per-forward MoE time (sum over layers of the slowest GPU): mean, p50, p95; imbalance; "
        "distance to the lower bound; which GPUs are the stragglers how often.",
    ]
)
