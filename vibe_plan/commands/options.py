"""Options that several commands share, in one place and one (Annotated) style."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

GpusOpt = Annotated[
    Path, typer.Option("--gpus", help="GPU profile (vibe.gpu-profile/v1 YAML).", show_default=False)
]
RoutingOpt = Annotated[
    Path,
    typer.Option(
        "--routing", help="Routing profile (vibe.routing-profile/v1 .npz).", show_default=False
    ),
]
DispatchOpt = Annotated[
    str,
    typer.Option(
        "--dispatch",
        help="How the engine splits an expert's tokens over its replicas: even (n/r: SGLang "
        "dynamic without an a2a backend, TensorRT-LLM, vLLM), static (SGLang static, the "
        "default with DeepEP), local (SGLang dynamic with DeepEP), lp (SGLang lp, per batch).",
    ),
]
NodesOpt = Annotated[
    int | None,
    typer.Option(help="Nodes (static/local); default: distinct hosts in the GPU profile."),
]
OriginOpt = Annotated[
    str,
    typer.Option(
        "--token-origin",
        help="static/local: share of the tokens each EP rank routes: uniform (DP attention, "
        "balanced), or comma-separated weights per rank or per node.",
    ),
]
PLACEMENT_FORMATS = (
    "vibe JSON, SGLang init-expert-location JSON, TensorRT-LLM load-balancer YAML or EPLB-style "
    "JSON"
)
PlacementsArg = Annotated[
    list[Path],
    typer.Argument(help=f"Placement files: {PLACEMENT_FORMATS}.", show_default=False),
]
PhaseOpt = Annotated[
    str,
    typer.Option(
        "--phase",
        help="Routing rows to use: all | prefill | decode (meta.row_phase). Separate prefill "
        "and decode instances (disaggregated serving) each want their own rows.",
    ),
]


def model_files(model: Path) -> list[tuple[str, Path]]:
    """--model and, for a checkpoint folder, every file in it: an output must not replace its
    config or weights (for `check_distinct`)."""
    files = [("--model", model)]
    if model.is_dir():
        files += [(f"--model's {p.name}", p) for p in sorted(model.iterdir()) if p.is_file()]
    return files
