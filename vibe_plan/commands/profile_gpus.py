"""CLI entry for `vibe profile-gpus` (thin: torch and the profiler load inside the call)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from vibe_plan.commands.options import model_files


def profile_gpus(
    out: Annotated[Path, typer.Option("--out", "-o", help="GPU profile YAML to write.")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Preset (mixtral-8x7b, qwen3-30b-a3b, qwen3-235b-a22b, deepseek-v3, "
            "gpt-oss-120b) or a Hugging Face config.json / model folder, read locally.",
        ),
    ] = None,
    device: Annotated[
        str, typer.Option(help="auto (CUDA if visible, else CPU), cuda or cpu.")
    ] = "auto",
    gpus: Annotated[
        str | None,
        typer.Option(
            help="CUDA indices to profile, in EP rank order, e.g. 0,1,2,3 (default: all)."
        ),
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option(help="bfloat16, float16 or float32 (default: bfloat16; --quick: the base's)."),
    ] = None,
    experts_per_gpu: Annotated[
        int | None,
        typer.Option(
            "--experts-per-gpu",
            "-k",
            help="Experts in one grouped call, i.e. slots per GPU (default: experts / GPUs, "
            "at most 32; CPU at most 2).",
        ),
    ] = None,
    tokens: Annotated[
        str | None,
        typer.Option(
            help="Tokens per expert to sweep, e.g. 1,8,64,512 (default GPU: 1..8192, "
            "dense at the knee; CPU: 1..256; --quick: 3 of the base's)."
        ),
    ] = None,
    repeats: Annotated[
        int | None,
        typer.Option(help="Timed samples per point (default: 50 GPU, 5 CPU; quick 20/3)."),
    ] = None,
    warmup_s: Annotated[
        float | None,
        typer.Option(
            "--warmup-s", help="Heat-soak seconds before timing (default: 15 GPU, 0.5 CPU)."
        ),
    ] = None,
    backend: Annotated[
        str, typer.Option(help="auto (grouped_mm where it works, else loop), grouped_mm, loop.")
    ] = "auto",
    quick: Annotated[
        bool, typer.Option("--quick", help="Recalibrate: a few points, fit a scale to --base.")
    ] = False,
    base: Annotated[
        Path | None, typer.Option(help="Full profile that --quick rescales (same GPUs, order).")
    ] = None,
    validate: Annotated[
        bool,
        typer.Option(
            "--validate", help="Also time skewed token vectors; write the cost model's error."
        ),
    ] = False,
    validate_trials: Annotated[
        int | None,
        typer.Option(help="Skewed vectors per device for --validate (default: 24 GPU, 6 CPU)."),
    ] = None,
    moved_pct: Annotated[
        float, typer.Option(help="--quick reports a GPU as moved at this % change or more.")
    ] = 3.0,
    seed: Annotated[
        int, typer.Option(help="Seed for weights, sample order, --validate (0 to 2147483647).")
    ] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Let torch's warnings through (silenced by default).")
    ] = False,
) -> None:
    """Measure each GPU's time for one routed expert's FFN vs the tokens routed to it (HELP)."""
    from vibe_plan.artifacts.io import check_distinct, check_writable
    from vibe_plan.console import progress
    from vibe_plan.gpus.measure import run_profile
    from vibe_plan.gpus.sweep import ProfileRequest

    inputs = [("--base", base)] if base is not None else []
    if model is not None and Path(model).exists():  # a config.json or a checkpoint folder
        inputs += model_files(Path(model))
    check_distinct([("--out", out)], inputs)
    # Under torchrun only rank 0 writes, and only node 0 needs the --out folder (measure checks).
    if os.environ.get("RANK", "0") == "0":
        check_writable(out, "--out")
    request = ProfileRequest.parse(
        out=out,
        model=model,
        device=device,
        gpus=gpus,
        dtype=dtype,
        experts_per_gpu=experts_per_gpu,
        tokens=tokens,
        repeats=repeats,
        warmup_s=warmup_s,
        backend=backend,
        quick=quick,
        base=base,
        validate=validate,
        validate_trials=validate_trials,
        moved_pct=moved_pct,
        seed=seed,
    )
    with progress(quiet) as bar:
        outcome = run_profile(request, bar, verbose)
    if outcome is not None:
        from vibe_plan.artifacts.gpu_profile import save_gpu_profile
        from vibe_plan.gpus.render import render

        save_gpu_profile(outcome.profile, outcome.out)
        render(outcome)


# Typer keeps the docstring's line breaks; one string per paragraph reads well at any width.
profile_gpus.__doc__ = "\n\n".join(
    [
        "Measure each GPU's time for one routed expert's FFN vs the tokens routed to it.",
        "Times gate/up GEMM, activation and down GEMM over K experts in one grouped call with "
        "the model's real shapes, all selected GPUs at once (one process each) after a heat "
        "soak, and writes the GPU profile that `vibe solve` reads. Under torchrun each rank "
        "profiles its own GPU and rank 0 writes one profile for the whole cluster. Without a "
        "GPU, --device cpu profiles the CPU, labelled as such.",
    ]
)
