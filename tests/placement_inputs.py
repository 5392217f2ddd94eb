"""Small GPU and routing profiles for the solve / evaluate tests, written as raw files so that tests
can also write broken ones (the loaders must reject those, so they cannot be used to write them)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import yaml

GPU_SCHEMA = "vibe.gpu-profile/v1"
ROUTING_SCHEMA = "vibe.routing-profile/v1"
PLACEMENT_SCHEMA = "vibe.placement/v1"
TOKENS = [1, 8, 32, 128, 512, 2048]


def curve_times(speed: float, tokens: list[int] = TOKENS, base_us: float = 4.0) -> list[float]:
    """A load-dependent expert time: a fixed part plus a part linear in tokens, scaled by `speed`
    (a slowdown factor: 1.2 is 20% slower)."""
    return [round(speed * (base_us + 0.05 * t), 4) for t in tokens]


def gpu_dict(
    speeds: list[float],
    hosts: list[str] | None = None,
    tokens: list[int] = TOKENS,
    times: list[list[float]] | None = None,
    uuids: bool = True,
) -> dict[str, Any]:
    """A `vibe.gpu-profile/v1` mapping with one GPU per speed factor."""
    hosts = hosts or ["node0"] * len(speeds)
    gpus = []
    for g, s in enumerate(speeds):
        entry: dict[str, Any] = {"id": g, "host": hosts[g], "name": "test GPU"}
        if uuids:
            entry["uuid"] = f"GPU-test-{g:04d}"
        entry["curve"] = {
            "tokens": list(tokens),
            "time_us": list(times[g]) if times is not None else curve_times(s, tokens),
        }
        gpus.append(entry)
    return {
        "schema": GPU_SCHEMA,
        "expert": {"hidden": 64, "intermediate": 128, "dtype": "bfloat16", "gated": True},
        "method": {"backend": "test", "experts_per_gpu": 4, "repeats": 1, "concurrent": False},
        "gpus": gpus,
    }


def write_gpus(path: Path, speeds: list[float] | None = None, **kw: Any) -> Path:
    doc = kw.pop("doc", None) or gpu_dict(speeds or [1.0, 1.1, 1.2, 1.3], **kw)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def skewed_counts(
    num_batches: int,
    num_layers: int,
    num_experts: int,
    tokens: int = 2048,
    seed: int = 0,
    sigma: float = 1.0,
) -> np.ndarray:
    """Per-layer log-normal popularity, multinomial per batch: int64 [B, L, E]."""
    rng = np.random.default_rng(seed)
    counts = np.empty((num_batches, num_layers, num_experts), dtype=np.int64)
    for layer in range(num_layers):
        logw = sigma * rng.standard_normal(num_experts)
        for b in range(num_batches):
            w = np.exp(logw + 0.2 * rng.standard_normal(num_experts))
            counts[b, layer] = rng.multinomial(tokens, w / w.sum())
    return counts


def routing_meta(num_experts: int, num_hidden_layers: int, **extra: Any) -> dict[str, Any]:
    meta = {
        "schema": ROUTING_SCHEMA,
        "model": "test",
        "num_experts": num_experts,
        "top_k": 2,
        "num_hidden_layers": num_hidden_layers,
        "phase": "prefill",
        "batch_tokens": 1024,
        "source": {"kind": "test"},
    }
    meta.update(extra)
    return meta


def write_routing(
    path: Path,
    counts: np.ndarray | None = None,
    layer_ids: Any = None,
    meta: Any = None,
    num_hidden_layers: int | None = None,
    drop: tuple[str, ...] = (),
    **meta_extra: Any,
) -> Path:
    """Write an .npz exactly as given (no validation). `meta` may be a dict (dumped as JSON) or a
    raw string; `drop` leaves arrays out."""
    if counts is None:
        counts = skewed_counts(6, 3, 16)
    counts = np.asarray(counts)
    if layer_ids is None:
        layer_ids = np.arange(1, counts.shape[1] + 1, dtype=np.int64) if counts.ndim == 3 else [0]
    if meta is None:
        nh = num_hidden_layers or int(np.max(layer_ids)) + 2
        meta = routing_meta(int(counts.shape[-1]), nh, **meta_extra)
    arrays = {
        "counts": counts,
        "layer_ids": np.asarray(layer_ids),
        "meta": np.array(meta if isinstance(meta, str) else json.dumps(meta)),
    }
    for key in drop:
        arrays.pop(key)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def load_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def placement_map(path: Path) -> np.ndarray:
    return np.asarray(load_json(path)["physical_to_logical_map"], dtype=np.int64)


def assert_valid_map(
    phy2log: np.ndarray,
    num_gpus: int,
    num_experts: int,
    slots_per_gpu: int,
    distinct_per_gpu: bool = True,
) -> None:
    """Every expert at least once per layer, exactly S slots per GPU, ids in range and, for vibe's
    own plans, no two replicas of one expert on one GPU."""
    phy2log = np.asarray(phy2log)
    if phy2log.ndim == 1:
        phy2log = phy2log[None]
    assert phy2log.shape[1] == num_gpus * slots_per_gpu
    assert phy2log.min() >= 0 and phy2log.max() < num_experts
    for row in phy2log:
        assert set(row.tolist()) == set(range(num_experts)), "an expert has no slot"
        if distinct_per_gpu:
            for g, block in enumerate(row.reshape(num_gpus, slots_per_gpu)):
                assert len(set(block.tolist())) == slots_per_gpu, f"GPU {g} holds a duplicate"


def solve_args(gpus: Path, routing: Path, out: Path, *extra: Any) -> list[str]:
    return [
        "solve",
        "--gpus",
        str(gpus),
        "--routing",
        str(routing),
        "--out",
        str(out),
        "--quiet",
        "--time-limit",
        "0.05",
        "--jobs",
        "1",
        *[str(x) for x in extra],
    ]


SPEEDS = [1.0, 1.1, 1.2, 1.3]
EXPORTS = ("sglang=s.json", "trtllm=t.yaml", "eplb=e.json")


def export_args(folder: Path) -> list[str]:
    out = []
    for spec in EXPORTS:
        fmt, name = spec.split("=")
        out += ["--export", f"{fmt}={folder / name}"]
    return out


KEEP = b"an output that must survive a refused run\n"


def assert_refused(vibe, args: list[Any], outs: list[Path], *needles: str) -> str:
    """Exit 2, exactly one `error:` line, no traceback, every output byte-identical."""
    for out in outs:
        out.write_bytes(KEEP)
    r = vibe(*args)
    assert r.code == 2, (r.code, r.out, r.err)
    errors = [line for line in r.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.err
    assert "Traceback" not in r.err + r.out
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    for out in outs:
        assert out.read_bytes() == KEEP, f"{out} was written by a refused run"
    return errors[0]


def assert_runs_light(*commands: list[Any]) -> None:
    """Run these vibe commands in one fresh interpreter: each exits 0, and none imports torch,
    transformers or safetensors (the light core)."""
    args = [[str(a) for a in c] for c in commands]
    script = textwrap.dedent(
        f"""
        import sys
        from vibe_plan.cli import main
        for args in {args!r}:
            code = main(args)
            assert code == 0, (args, code)
        heavy = sorted(m for m in ("torch", "transformers", "safetensors") if m in sys.modules)
        print("HEAVY", heavy)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout, res.stdout


def brute_force_optimum(cost: np.ndarray, logcnt: np.ndarray, S: int) -> float:
    """Brute force: every way to give each expert its replicas on distinct GPUs, S per GPU."""
    E, G = cost.shape
    best = np.inf
    choices = [list(itertools.combinations(range(G), int(r))) for r in logcnt]
    for pick in itertools.product(*choices):
        gpus = np.zeros((E, G), dtype=bool)
        for e, gs in enumerate(pick):
            gpus[e, list(gs)] = True
        if (gpus.sum(axis=0) == S).all():
            best = min(best, float((cost * gpus).sum(axis=0).max()))
    return best
