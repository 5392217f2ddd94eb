"""Serving latency of vibe, eplb and linear placements in the simulator (vibe_plan.simulate).

Inputs are SYNTHETIC: fleets from vibe_plan.synthetic.varied_gpu_profile (drawn curve shape,
per-GPU compute and memory speed within the spread, slow outliers), routing from
synthetic_routing (log-normal skew, per-batch drift), requests with log-normal prompt and output
lengths. Plans use the first 75% of the routing batches; the simulator draws its expert loads
from the rest (held out). Every placement meets the same arrivals and load draws.

Part 1, for model shapes of benchmarks/solve_bench.py and three fleets (identical GPUs, +-5%,
+-10% with one GPU 30% slower): the rate is swept up to past saturation (fractions of eplb's
measured capacity); per rate, P90 TTFT and SLO attainment of each placement. SLOs are set per
instance from eplb's latency at the lowest rate (TTFT: 5x its P50; TPOT: 2x its P50), so that
they bind near saturation. Goodput: the highest rate with >= 90% SLO attainment (interpolated).

Part 2 (scale): DeepSeek-V3-shaped EP{G}+{G} with the same per-GPU spread at G = 8 ... 256 GPUs,
tokens per iteration and requests growing with G (weak scaling). Straggler cost: how much
slower eplb serves on the spread fleet than on identical GPUs; vibe's gain: against eplb on the
spread fleet. Capacity: output tokens/s when every request arrives at once.

Prints markdown tables. Usage:
  python benchmarks/serving_bench.py [--only NAME] [--all] [--requests 120] [--rates 5]
                                     [--scale-gpus 8,16,32,64,128,256] [--no-scale] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other benchmarks' model shapes

from scale_bench import DEEPSEEK  # noqa: E402
from solve_bench import INSTANCES, Instance  # noqa: E402

from vibe_plan.placement.solve import SolveOptions, solve_placement  # noqa: E402
from vibe_plan.simulate.options import (  # noqa: E402
    A2A_US_PER_TOKEN,
    ATTN_US_PER_TOKEN,
    CTX_US_PER_KTOKEN,
    LAYER_OVERHEAD_US,
    SimulateOptions,
)
from vibe_plan.simulate.run import RunResult, simulate  # noqa: E402
from vibe_plan.simulate.workload import TraceRequests  # noqa: E402
from vibe_plan.synthetic import synthetic_routing, varied_gpu_profile  # noqa: E402

METHODS = ("vibe", "eplb", "linear")
FLEETS = {  # name: (spread, slow outliers)
    "identical": (0.0, 0),
    "+-5%": (0.05, 0),
    "+-10% + 1 slow": (0.10, 1),
}
DEFAULT = ("mixtral-8x7b EP8", "qwen3-30b-a3b EP16+16", "deepseek-v3 EP32+32")
FRACTIONS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)  # of eplb's capacity
BURST = 1e9  # requests/s: everything arrives at once (capacity)
GOOD = 0.9  # SLO attainment that counts as serving the rate


def fleet(shape, gpus: int, spread: float, outliers: int, seed: int):
    """Identical GPUs for spread 0 (no measurement noise either); the fleet-level curve shape
    (tile, floor, launch overhead) is the same for every spread at one seed."""
    noise = 0.01 if spread > 0 else 0.0
    return varied_gpu_profile(shape, gpus, spread, seed=seed + 100, outliers=outliers, noise=noise)


def requests(n: int, seed: int, max_out: int = 1024) -> TraceRequests:
    rng = np.random.default_rng([seed, 7])
    inp = np.clip(rng.lognormal(np.log(600), 0.9, n), 16, 8192).astype(np.int64)
    out = np.clip(rng.lognormal(np.log(120), 0.8, n), 1, max_out).astype(np.int64)
    return TraceRequests(inp, out, None, "synthetic", ())


def costs(hidden: int, top_k: int) -> dict:
    """The CLI's defaults are for hidden 7168 (DeepSeek-V3); smaller models scale down: weights
    and FLOPs of attention with hidden^2, all-to-all bytes with hidden x top-k."""
    r = hidden / 7168
    return {
        "layer_overhead_us": LAYER_OVERHEAD_US * r * r,
        "attn_us_per_token": ATTN_US_PER_TOKEN * r * r,
        "a2a_us_per_token": A2A_US_PER_TOKEN * r * top_k / 8,
        "ctx_us_per_ktoken": CTX_US_PER_KTOKEN * r,
    }


def solve_all(gpus, plan, redundant: int, time_limit: float) -> tuple[list, float]:
    t0 = time.perf_counter()
    out = []
    for m in METHODS:
        opts = SolveOptions(
            method=m, redundant=redundant, time_limit=time_limit, global_bound=False
        )
        out.append((m, solve_placement(gpus, plan, opts).placement))
    return out, time.perf_counter() - t0


def attainment(r: RunResult, slo_ttft: float, slo_tpot: float) -> float:
    d = r.detail
    ok = (d.ttft_s <= slo_ttft) & (~np.isfinite(d.tpot_s) | (d.tpot_s <= slo_tpot))
    return float(ok.mean())


def goodput(rates: list[float], att: list[float]) -> float:
    """Highest rate with attainment >= GOOD, linearly interpolated between swept rates."""
    best = 0.0
    for i, (r, a) in enumerate(zip(rates, att, strict=True)):
        if a >= GOOD:
            best = r
            continue
        if i > 0 and att[i - 1] >= GOOD:
            best = rates[i - 1] + (rates[i] - rates[i - 1]) * (att[i - 1] - GOOD) / (att[i - 1] - a)
        break
    return best


@dataclass
class Sweep:
    rows: list[list[str]]
    summary: list[str]


def sweep(inst: Instance, fleet_name: str, args) -> Sweep:
    spread, outliers = FLEETS[fleet_name]
    gpus = fleet(inst.shape, inst.gpus, spread, outliers, args.seed)
    routing = synthetic_routing(
        inst.experts,
        inst.layers,
        inst.top_k,
        args.batches,
        inst.batch_tokens,
        seed=args.seed + 1,
        num_groups=inst.groups,
        first_moe_layer=inst.first_moe,
    )
    plan, held = routing.split(0.25)
    plans, solve_s = solve_all(gpus, plan, inst.redundant, args.time_limit)
    tr = requests(args.requests, args.seed)
    base = SimulateOptions(
        batch_tokens=args.batch_tokens,
        load_draws=args.load_draws,
        seed=args.seed,
        **costs(inst.shape.hidden, inst.top_k),
    )
    t0 = time.perf_counter()
    eplb = [p for p in plans if p[0] == "eplb"]
    cap = simulate(gpus, held, eplb, tr, replace(base, rates=(BURST,))).runs[0].throughput_rps
    rates = [round(f * cap, 3) for f in FRACTIONS]
    res = simulate(gpus, held, plans, tr, replace(base, rates=tuple(rates)))
    sim_s = time.perf_counter() - t0
    by = {m: res.runs[i * len(rates) : (i + 1) * len(rates)] for i, m in enumerate(METHODS)}
    slo_ttft = 5 * by["eplb"][0].ttft_p50_s
    slo_tpot = 2 * by["eplb"][0].tpot_p50_s
    att = {m: [attainment(r, slo_ttft, slo_tpot) for r in by[m]] for m in METHODS}
    rows = []
    for k, rate in enumerate(rates):
        p90 = {m: by[m][k].ttft_p90_s for m in METHODS}
        rows.append(
            [
                inst.name,
                fleet_name,
                f"{FRACTIONS[k]:.2f}",
                f"{rate:,.1f}",
                *(f"{p90[m] * 1e3:,.1f}" for m in METHODS),
                f"{p90['vibe'] / p90['eplb'] - 1:+.1%}",
                f"{p90['vibe'] / p90['linear'] - 1:+.1%}",
                *(f"{att[m][k]:.0%}" for m in METHODS),
                f"{by['vibe'][k].expert_share:.0%}",
            ]
        )
    good = {m: goodput(rates, att[m]) for m in METHODS}
    below = [k for k, f in enumerate(FRACTIONS) if f < 1.0]

    def mean_ratio(a: str, b: str) -> float:
        return float(np.mean([by[a][k].ttft_p90_s / by[b][k].ttft_p90_s for k in below]))

    summary = [
        inst.name,
        fleet_name,
        f"{slo_ttft * 1e3:,.0f} / {slo_tpot * 1e3:,.1f}",
        *(f"{good[m]:,.1f}" for m in METHODS),
        f"{good['vibe'] / good['eplb'] - 1:+.1%}" if good["eplb"] > 0 else "-",
        f"{good['vibe'] / good['linear'] - 1:+.1%}" if good["linear"] > 0 else "-",
        f"{mean_ratio('vibe', 'eplb') - 1:+.1%}",
        f"{mean_ratio('vibe', 'linear') - 1:+.1%}",
        f"{solve_s:.0f} + {sim_s:.0f}",
    ]
    return Sweep(rows, summary)


def table(cols: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(r) + " |", flush=True)


def scale_row(gpus_n: int, args) -> list[str]:
    inst = Instance(
        f"deepseek-v3 EP{gpus_n}+{gpus_n}", DEEPSEEK, 256, 8, 58, 3, 8, gpus_n, gpus_n, 0
    )
    batch = args.scale_tokens_per_gpu * gpus_n
    routing = synthetic_routing(
        inst.experts, inst.layers, inst.top_k, args.scale_batches, batch,
        seed=args.seed + 1, num_groups=inst.groups, first_moe_layer=inst.first_moe,
    )  # fmt: skip
    plan, held = routing.split(0.25)
    spread, outliers = args.scale_spread, 0
    same = fleet(DEEPSEEK, gpus_n, 0.0, 0, args.seed)
    varied = fleet(DEEPSEEK, gpus_n, spread, outliers, args.seed)
    t0 = time.perf_counter()
    opts = {"redundant": gpus_n, "time_limit": args.time_limit, "global_bound": False}
    eplb_same = solve_placement(same, plan, SolveOptions(method="eplb", **opts)).placement
    eplb = solve_placement(varied, plan, SolveOptions(method="eplb", **opts)).placement
    vibe = solve_placement(varied, plan, SolveOptions(method="vibe", **opts)).placement
    solve_s = time.perf_counter() - t0
    tr = requests(args.scale_requests_per_gpu * gpus_n, args.seed, max_out=args.scale_max_out)
    base = SimulateOptions(
        batch_tokens=batch,
        max_running=args.scale_tokens_per_gpu * gpus_n // 4,
        load_draws=args.load_draws,
        seed=args.seed,
        **costs(DEEPSEEK.hidden, 8),
    )
    t0 = time.perf_counter()
    burst = replace(base, rates=(BURST,))
    cap_same = simulate(same, held, [("eplb", eplb_same)], tr, burst).runs[0]
    pair = [("eplb", eplb), ("vibe", vibe)]
    caps = simulate(varied, held, pair, tr, burst).runs
    rate = round(0.7 * caps[0].throughput_rps, 3)
    loaded = simulate(varied, held, pair, tr, replace(base, rates=(rate,)))
    sim_s = time.perf_counter() - t0
    e, v = loaded.runs
    t_last = np.array([g.curve.time_us[-1] for g in varied.gpus])
    return [
        str(gpus_n),
        f"{t_last.max() / t_last.min():.3f}",
        f"{batch:,}",
        f"{caps[0].throughput_tps:,.0f}",
        f"{cap_same.throughput_tps / caps[0].throughput_tps - 1:+.1%}",
        f"{caps[1].throughput_tps / caps[0].throughput_tps - 1:+.1%}",
        f"{caps[0].imbalance:.3f} / {caps[1].imbalance:.3f}",
        f"{rate:,.1f}",
        f"{e.ttft_p90_s * 1e3:,.1f}",
        f"{v.ttft_p90_s / e.ttft_p90_s - 1:+.1%}",
        f"{v.tpot_p50_s / e.tpot_p50_s - 1:+.1%}",
        f"{caps[1].expert_share:.0%}",
        f"{solve_s:.0f} + {sim_s:.0f}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", default=None, help="part 1: instances whose name contains this")
    ap.add_argument("--all", action="store_true", help="part 1: every solve_bench instance")
    ap.add_argument("--fleets", default=",".join(FLEETS), help="part 1: fleets to run")
    ap.add_argument("--requests", type=int, default=120, help="part 1: requests per run")
    ap.add_argument("--batches", type=int, default=16, help="routing batches (75%% plan)")
    ap.add_argument("--batch-tokens", type=int, default=4096, help="part 1: iteration budget")
    ap.add_argument("--load-draws", type=int, default=16)
    ap.add_argument("--time-limit", type=float, default=0.05, help="CP-SAT budget per layer")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-sweep", action="store_true", help="skip part 1")
    ap.add_argument("--no-scale", action="store_true", help="skip part 2")
    ap.add_argument("--scale-gpus", default="8,16,32,64,128,256")
    ap.add_argument("--scale-spread", type=float, default=0.10)
    ap.add_argument("--scale-batches", type=int, default=8)
    ap.add_argument("--scale-tokens-per-gpu", type=int, default=512)
    ap.add_argument("--scale-requests-per-gpu", type=int, default=4)
    ap.add_argument("--scale-max-out", type=int, default=128)
    args = ap.parse_args()
    if not args.no_sweep:
        names = [i.name for i in INSTANCES] if args.all else list(DEFAULT)
        chosen = [
            i for i in INSTANCES if i.name in names and (not args.only or args.only in i.name)
        ]
        sweeps = [sweep(i, f, args) for i in chosen for f in args.fleets.split(",")]
        print("Rate sweep: P90 TTFT (ms) and SLO attainment per placement\n")
        table(
            [
                "instance", "fleet", "x eplb capacity", "req/s", "P90 TTFT vibe", "eplb",
                "linear", "vibe vs eplb", "vibe vs linear", "SLO vibe", "eplb", "linear",
                "expert share",
            ],
            [r for s in sweeps for r in s.rows],
        )  # fmt: skip
        print(f"\nSummary: goodput = highest rate (req/s) with >= {GOOD:.0%} SLO attainment\n")
        table(
            [
                "instance", "fleet", "SLO TTFT / TPOT ms", "goodput vibe", "eplb", "linear",
                "vibe vs eplb", "vibe vs linear", "P90 TTFT vibe/eplb (< capacity)",
                "vibe/linear", "solve + sim s",
            ],
            [s.summary for s in sweeps],
        )  # fmt: skip
    if not args.no_scale:
        print(
            f"\nScale: DeepSeek-V3 EP{{G}}+{{G}}, +-{args.scale_spread:.0%} per GPU, "
            f"{args.scale_tokens_per_gpu} tokens per GPU per iteration, "
            f"{args.scale_requests_per_gpu} requests per GPU\n"
        )
        rows = [scale_row(int(g), args) for g in args.scale_gpus.split(",")]
        table(
            [
                "GPUs", "max/min", "tokens/iter", "eplb capacity tok/s",
                "straggler cost (identical vs spread)", "vibe capacity vs eplb",
                "imbalance eplb / vibe", "rate req/s (0.7 cap)", "eplb P90 TTFT ms",
                "vibe P90 TTFT vs eplb", "vibe TPOT p50 vs eplb", "expert share",
                "solve + sim s",
            ],
            rows,
        )  # fmt: skip


if __name__ == "__main__":
    main()
