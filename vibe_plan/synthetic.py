"""Synthetic GPU and routing profiles, labelled as such, for examples and benchmarks until measured
ones exist. The spread follows published fleet studies (Sinha et al., SC'22: 8% mean, 22% max
within a cluster); the skew, published per-layer max/mean expert loads."""

from __future__ import annotations

import numpy as np

from vibe_plan.artifacts.gpu_profile import ExpertShape, GpuCurve, GpuEntry, GpuProfile
from vibe_plan.artifacts.routing_profile import ROUTING_SCHEMA, RoutingProfile

SWEEP = [
    1,
    2,
    4,
    8,
    16,
    32,
    64,
    96,
    128,
    160,
    192,
    224,
    256,
    320,
    384,
    512,
    768,
    1024,
    1536,
    2048,
    3072,
    4096,
    8192,
]
_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "fp8": 1}


def roofline_time_us(
    shape: ExpertShape,
    tokens: np.ndarray,
    tflops: float = 650.0,
    tbps: float = 2.8,
    overhead_us: float = 3.0,
    tile: int = 64,
) -> np.ndarray:
    """One expert FFN on an H100-class GPU: weight streaming floor, then compute rising in steps
    of one tile of tokens (wave quantisation)."""
    mats = 3 if shape.gated else 2
    weight_bytes = mats * shape.hidden * shape.intermediate * _BYTES.get(shape.dtype, 2)
    padded = np.ceil(np.asarray(tokens, dtype=float) / tile) * tile
    flops = 2.0 * mats * shape.hidden * shape.intermediate * padded
    return np.maximum(weight_bytes / (tbps * 1e12), flops / (tflops * 1e12)) * 1e6 + overhead_us


def synthetic_gpu_profile(
    shape: ExpertShape,
    num_gpus: int,
    spread: float,
    seed: int = 0,
    gpus_per_node: int = 8,
) -> GpuProfile:
    """Each GPU's compute and memory speed lie within `spread` of nominal (0.10: +-10%, so the
    fastest and slowest differ by up to ~20%, near the 22% maximum variation Sinha et al. saw in
    one cluster). Drawn separately, so the speed ranking can change along the curve."""
    rng = np.random.default_rng(seed)
    tokens = np.array(SWEEP)
    gpus = []
    for g in range(num_gpus):
        u = rng.uniform(-1.0, 1.0)
        slow_compute = 1.0 + spread * u
        slow_memory = 1.0 + spread * (0.5 * u + 0.5 * rng.uniform(-1.0, 1.0))
        t = roofline_time_us(shape, tokens, 650.0 / slow_compute, 2.8 / slow_memory)
        gpus.append(
            GpuEntry(
                id=g,
                host=f"node{g // gpus_per_node}",
                name="synthetic H100-class (roofline model)",
                curve=GpuCurve(tokens.tolist(), np.round(t, 4).tolist()),
                telemetry={
                    "synthetic_compute_slowdown": round(slow_compute, 4),
                    "synthetic_memory_slowdown": round(slow_memory, 4),
                },
            )
        )
    method = {
        "backend": "synthetic-roofline",
        "experts_per_gpu": 8,
        "repeats": 0,
        "concurrent": False,
        "spread": spread,
        "seed": seed,
        "note": "SYNTHETIC: not measured; roofline curves with drawn per-GPU slowdowns",
    }
    return GpuProfile(expert=shape, gpus=gpus, method=method)


def synthetic_routing(
    num_experts: int,
    num_layers: int,
    top_k: int,
    num_batches: int,
    batch_tokens: int,
    seed: int = 0,
    skew: tuple[float, float] = (0.6, 1.1),
    drift: float = 0.25,
    num_groups: int | None = None,
    first_moe_layer: int = 0,
    model: str = "synthetic",
) -> RoutingProfile:
    """Per-layer log-normal expert popularity (sigma drawn from `skew`: hottest expert several times
    the mean, layer-varying), per-batch drift of the mix, multinomial sampling of each batch."""
    rng = np.random.default_rng(seed)
    counts = np.empty((num_batches, num_layers, num_experts), dtype=np.int64)
    for layer in range(num_layers):
        sigma = rng.uniform(*skew)
        logw = sigma * rng.standard_normal(num_experts)
        if num_groups:
            logw += 0.3 * np.repeat(rng.standard_normal(num_groups), num_experts // num_groups)
        for b in range(num_batches):
            w = np.exp(logw + drift * rng.standard_normal(num_experts))
            share = np.minimum(w / w.sum(), 1.0 / top_k)  # an expert sees each token at most once
            share /= share.sum()
            counts[b, layer] = rng.multinomial(batch_tokens * top_k, share)
    meta = {
        "schema": ROUTING_SCHEMA,
        "model": model,
        "num_experts": num_experts,
        "top_k": top_k,
        "num_hidden_layers": first_moe_layer + num_layers,
        "phase": "prefill",
        "batch_tokens": batch_tokens,
        "source": {
            "kind": "synthetic",
            "seed": seed,
            "skew_sigma": list(skew),
            "drift": drift,
            "note": "SYNTHETIC: drawn, not recorded from a model",
        },
    }
    if num_groups:
        meta["num_groups"] = num_groups
    layer_ids = np.arange(first_moe_layer, first_moe_layer + num_layers)
    return RoutingProfile(counts, layer_ids, meta)


def fleet_from_measured(
    measured: GpuProfile, num_gpus: int, spread: float, seed: int = 0, gpus_per_node: int = 8
) -> GpuProfile:
    """A fleet built from ONE measured curve (the first device of `measured`), each copy scaled by
    a drawn speed within `spread` of nominal. The curve shape is real; the spread is SYNTHETIC."""
    rng = np.random.default_rng(seed)
    src = measured.gpus[0]
    gpus = []
    for g in range(num_gpus):
        factor = 1.0 + spread * rng.uniform(-1.0, 1.0)
        gpus.append(
            GpuEntry(
                id=g,
                host=f"node{g // gpus_per_node}",
                name=f"{src.name} (scaled copy)",
                curve=GpuCurve(
                    list(src.curve.tokens), [round(t * factor, 4) for t in src.curve.time_us]
                ),
                telemetry={"synthetic_slowdown": round(factor, 4)},
            )
        )
    method = dict(measured.method)
    method["note"] = (
        f"curve measured on {src.name}; per-GPU spread SYNTHETIC (+-{spread:.0%}, seed {seed})"
    )
    return GpuProfile(expert=measured.expert, gpus=gpus, method=method)


def varied_gpu_profile(
    shape: ExpertShape,
    num_gpus: int,
    spread: float,
    seed: int = 0,
    gpus_per_node: int = 8,
    outliers: int = 0,
    outlier_slowdown: float = 1.3,
    noise: float = 0.01,
) -> GpuProfile:
    """A fleet less regular than `synthetic_gpu_profile`, so that no result is tuned to one curve
    family: the tile step (64 or 128 tokens) and its wave penalty, the launch overhead and the
    memory-bound floor are drawn per fleet; compute and memory speed are drawn independently per
    GPU; each point carries measurement noise (curves are not monotone, as measured ones are not);
    `outliers` GPUs (at random ranks) are slowed by `outlier_slowdown` in compute and memory."""
    rng = np.random.default_rng(seed)
    tokens = np.array(SWEEP)
    tile = int(rng.choice([64, 128]))
    overhead = float(rng.uniform(2.0, 8.0))
    tflops0 = float(rng.uniform(450.0, 750.0))
    tbps0 = float(rng.uniform(2.0, 3.4))
    slow = set(rng.choice(num_gpus, size=min(outliers, num_gpus), replace=False).tolist())
    gpus = []
    for g in range(num_gpus):
        slow_compute = 1.0 + spread * rng.uniform(-1.0, 1.0)
        slow_memory = 1.0 + spread * rng.uniform(-1.0, 1.0)
        if g in slow:
            slow_compute *= outlier_slowdown
            slow_memory *= outlier_slowdown
        t = roofline_time_us(
            shape, tokens, tflops0 / slow_compute, tbps0 / slow_memory, overhead, tile
        )
        t = t * (1.0 + noise * rng.standard_normal(len(tokens)))
        gpus.append(
            GpuEntry(
                id=g,
                host=f"node{g // gpus_per_node}",
                name="synthetic varied fleet (roofline with drawn shape and noise)",
                curve=GpuCurve(tokens.tolist(), np.round(np.maximum(t, 0.1), 4).tolist()),
                telemetry={
                    "synthetic_compute_slowdown": round(slow_compute, 4),
                    "synthetic_memory_slowdown": round(slow_memory, 4),
                },
            )
        )
    method = {
        "backend": "synthetic-varied",
        "experts_per_gpu": 8,
        "repeats": 0,
        "concurrent": False,
        "spread": spread,
        "seed": seed,
        "tile": tile,
        "outliers": sorted(slow),
        "note": "SYNTHETIC: not measured; drawn curve shape, per-GPU speeds, noise, outliers",
    }
    return GpuProfile(expert=shape, gpus=gpus, method=method)
