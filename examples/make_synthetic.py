"""Write the SYNTHETIC example inputs: a Qwen3-30B-A3B-shaped model (128 experts, top-8, 48 MoE
layers) on 8 GPUs. GPU spread (a few to 20% between nominally identical GPUs, as published fleet
studies report) and Zipf-like routing skew are drawn: nothing here was measured.
Replace with `vibe profile-gpus` / `vibe profile-routing` output on real hardware."""

from __future__ import annotations

import argparse
from pathlib import Path

from vibe_plan.artifacts import ExpertShape, save_gpu_profile, save_routing_profile
from vibe_plan.synthetic import synthetic_gpu_profile, synthetic_routing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    shape = ExpertShape(hidden=2048, intermediate=768, dtype="bfloat16", gated=True)
    gpus = synthetic_gpu_profile(shape, num_gpus=8, spread=0.10, seed=args.seed)
    routing = synthetic_routing(
        num_experts=128,
        num_layers=48,
        top_k=8,
        num_batches=40,
        batch_tokens=8192,
        seed=args.seed + 1,
        model="synthetic Qwen3-30B-A3B-shaped",
    )
    plan, held_out = routing.split(0.25)
    save_gpu_profile(gpus, args.out / "gpus.yaml")
    save_routing_profile(plan, args.out / "routing.npz")
    save_routing_profile(held_out, args.out / "routing-heldout.npz")
    print(
        f"wrote {args.out}/gpus.yaml, routing.npz ({plan.num_batches} batches), "
        f"routing-heldout.npz ({held_out.num_batches} batches) - SYNTHETIC"
    )


if __name__ == "__main__":
    main()
