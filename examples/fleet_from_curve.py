"""Turn a one-device measured profile into an N-GPU fleet for the demo: the curve shape is measured,
the per-GPU spread is SYNTHETIC and the file says so (method.note)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vibe_plan.artifacts import load_gpu_profile, save_gpu_profile
from vibe_plan.synthetic import fleet_from_measured


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("measured", type=Path)
    ap.add_argument("--gpus", type=int, default=4)
    ap.add_argument("--spread", type=float, default=0.10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    fleet = fleet_from_measured(load_gpu_profile(args.measured), args.gpus, args.spread, args.seed)
    save_gpu_profile(fleet, args.out)
    print(f"wrote {args.out}: {args.gpus} GPUs from {args.measured} (spread SYNTHETIC)")


if __name__ == "__main__":
    main()
