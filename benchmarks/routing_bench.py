"""Cost of the router hooks: profiled vs plain forward on a small random MoE model (CPU), and
replay tokens/s. Usage: python benchmarks/routing_bench.py [--arch qwen3_moe|deepseek_v3]"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from vibe_plan.routing.batching import TokenRequest, prefill_batches
from vibe_plan.routing.hooks import RouterRecorder, find_routers
from vibe_plan.routing.loading import load_model
from vibe_plan.routing.replay import replay

SHAPES = {  # small but not toy: per-token work comparable to a narrow real layer
    "qwen3_moe": dict(
        num_experts=32, num_experts_per_tok=4, moe_intermediate_size=128, head_dim=32
    ),
    "deepseek_v3": dict(
        n_routed_experts=32,
        num_experts_per_tok=4,
        moe_intermediate_size=128,
        n_shared_experts=1,
        first_k_dense_replace=1,
        n_group=4,
        topk_group=2,
        kv_lora_rank=64,
        q_lora_rank=64,
        qk_rope_head_dim=16,
        qk_nope_head_dim=16,
        v_head_dim=32,
    ),
}


def build(arch: str, folder: Path) -> None:
    cfg = AutoConfig.for_model(
        arch,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=8,
        vocab_size=1024,
        max_position_embeddings=1024,
        **SHAPES[arch],
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)


def time_forward(model, ids, mask, routers, num_experts: int, repeats: int):
    """CPU seconds per forward (process time: steadier than wall time on a shared machine),
    plain and hooked, interleaved so machine load hits both alike. Returns medians."""
    plain, hooked = [], []
    flat = mask.reshape(-1).bool()
    clock = time.process_time
    with torch.inference_mode():
        for _ in range(3):
            model(input_ids=ids, attention_mask=mask)  # warm-up
        for _ in range(repeats):
            t = clock()
            model(input_ids=ids, attention_mask=mask)
            plain.append(clock() - t)
            with RouterRecorder(routers, num_experts) as rec:
                rec.mask = flat
                t = clock()
                model(input_ids=ids, attention_mask=mask)
                rec.take()  # the counts' copy to the host is part of the cost
                hooked.append(clock() - t)
    return statistics.median(plain), statistics.median(hooked)


def hook_cost(model, ids, mask, routers, num_experts: int, repeats: int = 50) -> float:
    """CPU seconds of the hooks' own work for one forward, replayed on saved router outputs."""
    saved: dict[int, tuple] = {}
    handles = [
        m.register_forward_hook(
            lambda mod, a, out, layer=layer: saved.__setitem__(layer, (mod, out))
        )
        for layer, m in routers.items()
    ]
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)
    for h in handles:
        h.remove()
    rec = RouterRecorder({}, num_experts)
    rec.layer_ids = list(routers)
    hooks = [rec._hook(slot) for slot in range(len(routers))]
    rec.mask = mask.reshape(-1).bool()
    t = time.process_time()
    for _ in range(repeats):
        for slot, layer in enumerate(routers):
            hooks[slot](saved[layer][0], None, saved[layer][1])
        rec.take()
    return (time.process_time() - t) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description="router-hook overhead and replay speed on CPU")
    ap.add_argument("--arch", choices=sorted(SHAPES), default="qwen3_moe")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: CPU time is not "
        "inflated by spin-waiting threads on a busy machine)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / args.arch
        build(args.arch, folder)
        model = load_model(folder, "cpu", "auto")
    routers = find_routers(model)
    num_experts = next(iter(routers.values())).weight.shape[0]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 1024, (args.batch, args.seq), generator=g)
    mask = torch.ones_like(ids)
    mask[1::2, : args.seq // 4] = 0  # some padding, so the mask path is exercised
    plain, hooked = time_forward(model, ids, mask, routers, num_experts, args.repeats)
    own = hook_cost(model, ids, mask, routers, num_experts)
    tokens = int(mask.sum())
    print(
        f"model: tiny random {args.arch}, hidden 256, 4 layers, {num_experts} experts, "
        f"{len(routers)} MoE layers, threads {torch.get_num_threads()}"
    )
    print(
        f"forward of {args.batch}x{args.seq} ({tokens} valid tokens), {args.repeats} interleaved "
        f"repeats, median CPU time: plain {plain * 1e3:.1f} ms, profiled {hooked * 1e3:.1f} ms, "
        f"slowdown {100 * (hooked / plain - 1):+.1f}%"
    )
    print(
        f"hooks' own work per forward: {own * 1e3:.2f} ms = {100 * own / plain:.2f}% of the "
        "plain forward's CPU time"
    )
    reqs = [
        TokenRequest(i, torch.randint(3, 1024, (int(n),), generator=g).tolist(), 8)
        for i, n in enumerate(torch.randint(16, 200, (64,), generator=g))
    ]
    batches = prefill_batches(reqs, 1024)
    with RouterRecorder(routers, num_experts) as rec2:
        res = replay(model, rec2, batches, 0, torch.device("cpu"), 0, True, 0)
    print(
        f"replay prefill: {res.tokens} tokens in {len(batches)} batches, {res.seconds:.2f} s, "
        f"{res.tokens / res.seconds:,.0f} tokens/s"
    )
    with RouterRecorder(routers, num_experts) as rec3:
        res = replay(model, rec3, batches[:2], 0, torch.device("cpu"), 8, False, 0)
    steps = len(res.rows)
    print(
        f"replay decode: {res.tokens} tokens in {steps} steps (about "
        f"{res.tokens // max(steps, 1)} requests each), {res.decode_seconds:.2f} s, "
        f"{res.tokens / res.decode_seconds:,.0f} tokens/s"
    )


if __name__ == "__main__":
    main()
