"""CLI entries for `vibe profile-routing` and `vibe import-routing` (thin; heavy imports inside)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vibe_plan.commands.options import model_files
from vibe_plan.defaults import BATCH_TOKENS

if TYPE_CHECKING:  # numpy-backed; kept out of `vibe --help`'s imports
    from vibe_plan.artifacts.routing_profile import RoutingProfile

TRACE_FORMATS = "auto|jsonl|sharegpt|azure|burstgpt|mooncake"


def profile_routing(
    model: Annotated[
        Path,
        typer.Option(
            help="Local Hugging Face checkpoint folder (config, "
            "safetensors, tokenizer); nothing is downloaded."
        ),
    ],
    trace: Annotated[Path, typer.Option(help="Request trace to replay.")],
    out: Annotated[Path, typer.Option(help="Routing profile to write (.npz).")],
    trace_format: Annotated[str, typer.Option(help=f"Trace format: {TRACE_FORMATS}.")] = "auto",
    batch_tokens: Annotated[
        int,
        typer.Option(
            help="Prompt tokens per prefill batch (one row "
            "of counts per batch), as a server would batch."
        ),
    ] = BATCH_TOKENS,
    max_requests: Annotated[
        int, typer.Option(help="Replay only the first N requests (0: all).")
    ] = 0,
    phase: Annotated[
        str,
        typer.Option(
            help="prefill | decode | both. Decode rows are one per "
            "generation step; with both, meta.row_phase tags rows."
        ),
    ] = "prefill",
    decode_steps: Annotated[
        int,
        typer.Option(
            help="Tokens generated per request in decode (capped by the trace's output length)."
        ),
    ] = 16,
    device: Annotated[
        str, typer.Option(help="auto | cpu | cuda (cuda spreads the model over the visible GPUs).")
    ] = "auto",
    dtype: Annotated[
        str, typer.Option(help="auto (the checkpoint's) | float32 | bfloat16 | float16.")
    ] = "auto",
    seed: Annotated[
        int, typer.Option(help="Seed for decode sampling and filler text (0 to 2147483647).")
    ] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar or summary.")] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", help="Let transformers' log (load report) and torch warnings through."
        ),
    ] = False,
) -> None:
    """Replay a request trace through a MoE model's own routers and record tokens per expert.

    Hooks read each router's chosen experts (padding excluded) in every MoE layer; the profile
    keeps one row per prefill batch (and per decode step) for `vibe solve`.
    """
    from vibe_plan.artifacts.io import check_distinct, check_writable
    from vibe_plan.artifacts.routing_profile import save_routing_profile
    from vibe_plan.console import interactive, token_progress, warn
    from vibe_plan.routing.profile_run import ProfileOptions, profile_routing_run

    check_distinct([("--out", out)], [("--trace", trace), *model_files(model)])
    check_writable(out, "--out")  # before the model loads and the replay runs
    with token_progress("replaying", quiet) as on_tokens:
        run = profile_routing_run(
            ProfileOptions(
                model=model,
                trace=trace,
                trace_format=trace_format,
                batch_tokens=batch_tokens,
                max_requests=max_requests,
                phase=phase,
                decode_steps=decode_steps,
                device=device,
                dtype=dtype,
                seed=seed,
                show_progress=interactive(quiet),
                verbose=verbose,
            ),
            on_tokens,
        )
    for note in run.notes:
        warn(note)
    save_routing_profile(run.profile, out)
    _report(run.profile, out, quiet, run.tokens, run.seconds)


def import_routing(
    source: Annotated[
        Path,
        typer.Argument(
            help="Engine dump: SGLang .pt file or folder, "
            "TensorRT-LLM statistics folder, vLLM .npy/.jsonl."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Routing profile to write (.npz).")],
    format: Annotated[
        str, typer.Option("--format", help="auto | sglang | trtllm | vllm.")
    ] = "auto",
    model: Annotated[
        Path | None,
        typer.Option(
            help="Checkpoint folder: supplies decoder-layer ids, expert groups and shared experts."
        ),
    ] = None,
    batch_tokens: Annotated[
        int, typer.Option(help="vLLM only: tokens of consecutive requests per row.")
    ] = BATCH_TOKENS,
    placement: Annotated[
        Path | None,
        typer.Option(
            help="TensorRT-LLM only: the load-balancer file the run served with (or any "
            "placement vibe reads); its statistics then count slots, folded back onto experts."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No summary.")] = False,
) -> None:
    """Turn the expert loads a serving engine recorded into a routing profile.

    SGLang: the expert-distribution recorder's stat or per_pass dumps; TensorRT-LLM:
    EXPERT_STATISTIC_PATH (meta_info.json + rank*.safetensors); vLLM: routed_experts arrays.
    """
    from vibe_plan.artifacts.io import check_distinct, check_writable
    from vibe_plan.artifacts.routing_profile import save_routing_profile
    from vibe_plan.console import warn
    from vibe_plan.errors import VibeError
    from vibe_plan.routing.import_run import import_routing_run

    if batch_tokens < 1:
        raise VibeError(f"--batch-tokens is {batch_tokens}; it must be at least 1")
    inputs = [("the source", source), *(model_files(model) if model is not None else [])]
    inputs += [("--placement", placement)] if placement is not None else []
    check_distinct([("--out", out)], inputs)
    check_writable(out, "--out")
    run = import_routing_run(source, format, model, batch_tokens, placement)
    for note in run.notes:
        warn(note)
    save_routing_profile(run.profile, out)
    _report(run.profile, out, quiet)


def _report(p: RoutingProfile, out: Path, quiet: bool, tokens: int = 0, secs: float = 0.0) -> None:
    from vibe_plan.console import console
    from vibe_plan.routing.render import summary_table

    if quiet:
        return
    shape = "x".join(str(n) for n in p.counts.shape)
    console.print(summary_table(p, f"expert load per MoE layer ({p.meta['phase']})"))
    rate = f"; {tokens:,} tokens in {secs:.1f} s ({tokens / secs:,.0f} tokens/s)" if secs else ""
    console.print(f"wrote {out}: counts {shape} (batches x MoE layers x experts){rate}")
