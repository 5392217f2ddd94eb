"""Expert-FFN timing figures per backend and model shape: grouped_mm vs the per-expert loop.

Runs on whatever device torch sees (`--device cpu` forces the CPU). Not part of `make test`.
    python benchmarks/gpu_profile_bench.py --device cpu
"""

from __future__ import annotations

import argparse
import time

import torch

from vibe_plan.artifacts.gpu_profile import ExpertShape
from vibe_plan.gpus.worker import BenchSpec, measure_device
from vibe_plan.model_config import resolve_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", default="qwen3-30b-a3b,deepseek-v3")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--experts", type=int, default=None, help="K [16 GPU, 2 CPU]")
    ap.add_argument("--tokens", default=None, help="[1,16,128,1024,4096 GPU; 1,16,64,256 CPU]")
    ap.add_argument("--repeats", type=int, default=None, help="[30 GPU, 5 CPU]")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads [all]")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = args.device.startswith("cuda")
    k = args.experts or (16 if gpu else 2)
    tokens = [
        int(t) for t in (args.tokens or ("1,16,128,1024,4096" if gpu else "1,16,64,256")).split(",")
    ]
    repeats = args.repeats or (30 if gpu else 5)
    device_name = torch.cuda.get_device_name() if gpu else "cpu"
    print(
        f"device {device_name}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"K={k}, repeats {repeats}, {args.dtype}"
    )
    print(
        f"{'model':16} {'backend':10} "
        + " ".join(f"{'t(' + str(t) + ')':>10}" for t in tokens)
        + f" {'p90/p50 max':>12} {'wall s':>7}"
    )
    for name in args.models.split(","):
        m = resolve_model(name)
        shape = ExpertShape(m.hidden, m.intermediate, args.dtype, m.gated)
        for backend in ("grouped_mm", "loop"):
            spec = BenchSpec(shape, k, tokens, repeats, warmup_s=0.5, backend=backend)
            t0 = time.perf_counter()
            r = measure_device(spec, args.device)
            wall = time.perf_counter() - t0
            spread = max(hi / mid for hi, mid in zip(r.p90_us, r.median_us, strict=True))
            cells = " ".join(f"{us:10.1f}" for us in r.median_us)
            print(f"{name:16} {r.backend:10} {cells} {spread:12.2f} {wall:7.1f}")
    print("t(n): median microseconds of one expert's FFN (per-expert share of the K-expert call)")


if __name__ == "__main__":
    main()
