"""profile-routing as a library call: load model and trace, replay, build the routing profile."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vibe_plan.artifacts.io import sha256_file
from vibe_plan.artifacts.routing_profile import RoutingProfile
from vibe_plan.defaults import BATCH_TOKENS
from vibe_plan.errors import VibeError
from vibe_plan.model_config import expert_meta, model_name, moe_facts, read_config
from vibe_plan.routing.batching import prefill_batches, tokenize_requests
from vibe_plan.routing.import_run import architecture_of
from vibe_plan.routing.traces import read_trace

PHASES = ("prefill", "decode", "both")


@dataclass
class ProfileOptions:
    model: Path
    trace: Path
    trace_format: str = "auto"
    batch_tokens: int = BATCH_TOKENS
    max_requests: int = 0
    phase: str = "prefill"
    decode_steps: int = 16
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    show_progress: bool = False  # transformers' own loading bars
    verbose: bool = False  # let transformers' log (load report) and torch warnings through


@dataclass
class ProfileRun:
    profile: RoutingProfile
    tokens: int
    seconds: float
    notes: list[str] = field(default_factory=list)  # what the user should hear about the run


def profile_routing_run(
    opt: ProfileOptions, on_tokens: Callable[[int, int], None] | None = None
) -> ProfileRun:
    """Replay the trace through the model's routers. `on_tokens(done, total)` reports progress."""
    if opt.phase not in PHASES:
        raise VibeError(f"--phase {opt.phase!r}: use one of {', '.join(PHASES)}")
    if opt.batch_tokens < 1:
        raise VibeError(f"--batch-tokens is {opt.batch_tokens}; it must be at least 1")
    if opt.max_requests < 0:
        raise VibeError(f"--max-requests is {opt.max_requests}; give 0 (all) or more")
    if opt.decode_steps < 0:
        raise VibeError(f"--decode-steps is {opt.decode_steps}; it must be 0 or more")
    if opt.phase != "prefill" and opt.decode_steps < 1:
        raise VibeError(f"--phase {opt.phase} needs --decode-steps of at least 1")
    if not 0 <= opt.seed <= 2**31 - 1:
        raise VibeError(f"--seed is {opt.seed}; give a seed from 0 to {2**31 - 1}")
    # Cheap checks first: a bad folder or trace fails before torch and the weights load.
    cfg = read_config(opt.model)
    facts = moe_facts(cfg, model_name(opt.model, cfg), f"{opt.model}/config.json")
    trace_notes: list[str] = []
    requests, fmt = read_trace(opt.trace, opt.trace_format, opt.max_requests, trace_notes)

    import torch

    from vibe_plan.routing.hooks import ROUTER_NAME, RouterRecorder, find_routers
    from vibe_plan.routing.loading import (
        input_device,
        load_model,
        load_tokenizer,
        model_device,
        quiet_libraries,
    )
    from vibe_plan.routing.replay import check_rows, replay

    torch.manual_seed(opt.seed)
    device = model_device(opt.device)
    tokenizer = load_tokenizer(opt.model, opt.verbose)
    tokens, notes = tokenize_requests(requests, tokenizer, opt.seed, opt.batch_tokens)
    notes = trace_notes + notes
    batches = prefill_batches(tokens, opt.batch_tokens)
    model = load_model(opt.model, device, opt.dtype, opt.show_progress, opt.verbose)
    routers = find_routers(model)
    if not routers:
        raise VibeError(
            f"no router modules found in {type(model).__name__} (looked for module names "
            f"matching {ROUTER_NAME.pattern}); this architecture is not supported yet"
        )
    _check_router_weights(routers)
    layer_ids = list(routers)
    if layer_ids != facts.moe_layers:
        notes.append(
            f"routers found in decoder layers {layer_ids}, the config implies {facts.moe_layers}; "
            "using the layers that have routers"
        )
    pad_id = _pad_id(tokenizer)
    decode_steps = 0 if opt.phase == "prefill" else opt.decode_steps
    with RouterRecorder(routers, facts.num_experts) as rec, quiet_libraries(opt.verbose):
        result = replay(
            model,
            rec,
            batches,
            pad_id,
            input_device(model),
            decode_steps,
            record_prefill=opt.phase != "decode",
            seed=opt.seed,
            on_tokens=on_tokens,
        )
    if not result.rows:
        raise VibeError("the replay recorded no tokens; check the trace and --decode-steps")
    notes += check_rows(result, facts.top_k, layer_ids)
    phase = {"prefill": "prefill", "decode": "decode", "both": "mixed"}[opt.phase]
    meta: dict[str, Any] = {
        "model": facts.model,
        "model_type": facts.model_type,
        "num_experts": facts.num_experts,
        "top_k": facts.top_k,
        "num_hidden_layers": facts.num_hidden_layers,
        "mtp_layers": facts.mtp_layers,  # next-n layers after the decoder (TensorRT-LLM's keys)
        "phase": phase,
        "batch_tokens": opt.batch_tokens,
        "row_tokens": result.row_tokens,
        "source": _source(opt, fmt, len(requests), decode_steps, device, model),
        **expert_meta(facts),
    }
    if architecture_of(cfg):
        meta["architecture"] = architecture_of(cfg)
    if phase == "mixed":
        meta["row_phase"] = result.row_phase
    if facts.num_groups:
        meta["num_groups"] = facts.num_groups
        if facts.topk_group:
            meta["topk_group"] = facts.topk_group
    if facts.shared_experts:
        # Every valid token goes through each shared expert of every MoE layer.
        meta["shared_experts"] = {"count": facts.shared_experts, "tokens": result.row_tokens}
    profile = RoutingProfile(np.stack(result.rows), np.asarray(layer_ids, np.int64), meta)
    return ProfileRun(profile, result.tokens, result.seconds, notes)


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value  # padded positions are masked, so any valid id will do
    return 0


def _source(
    opt: ProfileOptions, fmt: str, n_requests: int, decode_steps: int, device: str, model: Any
) -> dict[str, Any]:
    import transformers

    return {
        "kind": "replay",
        "trace": Path(opt.trace).name,
        "trace_sha256": sha256_file(opt.trace),
        "trace_format": fmt,
        "requests": n_requests,
        "decode_steps": decode_steps,
        "seed": opt.seed,
        "device": device,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "model_class": type(model).__name__,
        "transformers": transformers.__version__,
    }


def _check_router_weights(routers: dict[int, Any]) -> None:
    """A router with NaN or infinite weights picks the same experts for every token: the profile
    would be garbage that looks like data."""
    import torch

    for layer, module in routers.items():
        for name, param in module.named_parameters():
            if param.is_floating_point() and not bool(torch.isfinite(param).all()):
                raise VibeError(
                    f"decoder layer {layer}'s router weight {name} holds NaN or infinite values; "
                    "the checkpoint is corrupt: re-download or re-convert it"
                )
