"""`vibe validate`: parse options, check (vibe_plan.placement.validate), print the verdict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

EXIT_FAILED = 1  # a check failed: invalid structure, a regression, a device mismatch


def validate(
    placement: Annotated[
        Path,
        typer.Argument(
            help="Placement to check: vibe JSON, SGLang, TensorRT-LLM or EPLB-style file.",
            show_default=False,
        ),
    ],
    gpus: Annotated[
        Path | None,
        typer.Option(
            "--gpus",
            help="GPU profile to check it against (GPU count, GPU UUIDs per rank); engine "
            "files need it.",
            show_default=False,
        ),
    ] = None,
    routing: Annotated[
        Path | None,
        typer.Option(
            "--routing",
            help="Routing profile to check it against (MoE layers, experts; the batches "
            "--against scores on).",
            show_default=False,
        ),
    ] = None,
    against: Annotated[
        Path | None,
        typer.Option(
            "--against",
            help="Fail if the placement's predicted time is worse than this placement's by more "
            "than --max-regression (needs --gpus and --routing).",
            show_default=False,
        ),
    ] = None,
    max_regression: Annotated[
        float,
        typer.Option("--max-regression", help="Allowed slowdown against --against (0.01: 1%)."),
    ] = 0.01,
    devices: Annotated[
        bool,
        typer.Option(
            "--devices",
            help="Check that this node's GPUs (NVML), in CUDA's order, are the ones the "
            "placement was planned for, in EP rank order.",
        ),
    ] = False,
    dispatch: Annotated[
        str | None,
        typer.Option(
            "--dispatch",
            help="Rule for --against: even | static | local | lp; default: the placement's "
            "recorded rule, else even.",
            show_default=False,
        ),
    ] = None,
    token_origin: Annotated[
        str | None,
        typer.Option(
            "--token-origin",
            help="static/local: uniform or weights per rank or node; default: the recorded one.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the verdict as JSON on stdout.")
    ] = False,
) -> None:
    from vibe_plan.console import console, warn
    from vibe_plan.placement.validate import validate_run

    run = validate_run(
        placement, gpus, routing, against, max_regression, devices, dispatch, token_origin
    )
    for note in run.notes:
        warn(note)
    if as_json:
        typer.echo(json.dumps(run.to_dict(), indent=2))
    else:
        console.print(run.verdict(), markup=False, highlight=False, soft_wrap=True)
    if not run.ok:
        raise typer.Exit(EXIT_FAILED)


# Typer keeps a docstring's line breaks; one string per paragraph reads well at any width.
validate.__doc__ = "\n\n".join(
    [
        "Check a placement: valid structure, no regression, the planned GPUs.",
        "Exit 0: every check passed. Exit 1: a check failed (invalid structure or not for these "
        "profiles, slower than --against by more than --max-regression, or this node's GPUs are "
        "not the planned ones; the verdict names the CUDA_DEVICE_ORDER and CUDA_VISIBLE_DEVICES "
        "that fix a device mismatch). Exit 2: a usage or input error (a missing file, broken "
        "profiles or --against file).",
        "Prints a one-line verdict (valid: ... / invalid: ...); --json prints it for machines.",
    ]
)
