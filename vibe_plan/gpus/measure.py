"""profile-gpus end to end: pick devices, measure them (in-process, one process per GPU, or as
torchrun ranks), turn the results into one GPU profile, validate it, and write it atomically."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vibe_plan.artifacts.gpu_profile import GpuCurve, GpuEntry, GpuProfile
from vibe_plan.artifacts.io import check_writable, sha256_file
from vibe_plan.cost import time_curve
from vibe_plan.errors import VibeError
from vibe_plan.gpus.fit import fit_scale, isotonic
from vibe_plan.gpus.model_error import validation_block
from vibe_plan.gpus.sweep import (
    ProfileRequest,
    Sweep,
    build_sweep,
    check_request,
    check_visible,
    gpu_text,
)
from vibe_plan.gpus.worker import DeviceResult, local_sync, safe_measure


@dataclass
class ProfileOutcome:
    profile: GpuProfile
    out: Path
    quick: dict[str, Any] | None = None
    validation: dict[str, Any] | None = None


def bench_device_kind(requested: str) -> str:
    import torch

    if requested == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise VibeError("--device cuda: no CUDA GPU is visible to torch; use --device cpu")
    return "cpu"


def run_profile(
    req: ProfileRequest, progress: Any = None, verbose: bool = False
) -> ProfileOutcome | None:
    """Measure; return the profile (the caller saves it) or None on torchrun ranks other than 0.
    `progress`: an optional rich-Progress-like object (add_task, update) to show timing on.
    `verbose`: let torch's warnings through (by default they are silenced)."""
    check_request(req)
    # --gpus indices then mean what nvidia-smi shows (CUDA's default order is fastest first).
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    from vibe_plan.gpus.distributed import dist_env

    env = dist_env()
    if env is None:  # under torchrun only rank 0 writes, and checks, the output
        check_writable(req.out, "--out")
    with warnings.catch_warnings():
        if not verbose:
            warnings.simplefilter("ignore")
        return _run(req, env, progress, verbose)


def _run(req: ProfileRequest, env: Any, progress: Any, verbose: bool) -> ProfileOutcome | None:
    device_kind = bench_device_kind(req.device)
    if env is not None:
        return _run_distributed(req, env, device_kind, progress, verbose)
    import torch

    if device_kind == "cpu":
        if req.gpus is not None:
            why = "--device cpu was given" if req.device == "cpu" else "no CUDA GPU is visible"
            raise VibeError(f"--gpus {gpu_text(req.gpus)} selects CUDA GPUs, but {why}")
        devices = ["cpu"]
    else:
        count = torch.cuda.device_count()
        indices = check_visible(req.gpus, count) if req.gpus else list(range(count))
        devices = [f"cuda:{i}" for i in indices]
    sweep = build_sweep(req, device_kind, len(devices))
    sweep.spec.verbose = verbose
    bar = progress or _NoProgress()
    tasks = [bar.add_task(f"{d} timing", total=sweep.spec.repeats) for d in devices]

    def show(rank: int, done: int, total: int) -> None:
        bar.update(tasks[rank], completed=done, total=total)

    if len(devices) == 1:
        results = [safe_measure(sweep.spec, devices[0], 0, local_sync, lambda a, b: show(0, a, b))]
    else:
        from vibe_plan.gpus.parallel import run_parallel

        results = run_parallel(sweep.spec, devices, show)
    return finish(req, sweep, results, concurrent=len(devices) > 1)


class _NoProgress:
    def add_task(self, *args: object, **kwargs: object) -> int:
        return 0

    def update(self, *args: object, **kwargs: object) -> None:
        pass


def _run_distributed(
    req: ProfileRequest, env: Any, device_kind: str, progress: Any, verbose: bool = False
) -> ProfileOutcome | None:
    from vibe_plan.gpus.distributed import DistGroup
    from vibe_plan.gpus.telemetry import cpu_threads_for

    if req.gpus is not None:
        raise VibeError("--gpus cannot be used under torchrun: each rank uses GPU LOCAL_RANK")
    group = DistGroup(env, device_kind)
    try:
        payload: Sweep | str | None = None
        if env.rank == 0:  # only rank 0 needs the config file, base profile and output folder
            try:
                check_writable(req.out, "--out")
                payload = build_sweep(req, device_kind, env.world)
            except VibeError as e:
                payload = str(e)
        payload = group.broadcast(payload)
        if isinstance(payload, str):
            raise VibeError(payload if env.rank == 0 else f"rank 0 refused the run: {payload}")
        sweep = payload
        assert isinstance(sweep, Sweep)
        spec = dataclasses.replace(sweep.spec, verbose=verbose)
        if device_kind == "cuda":
            device = f"cuda:{env.local_rank}"
        else:
            device = "cpu"
            spec = dataclasses.replace(spec, threads=cpu_threads_for(env.local_world))
        bar = progress if progress is not None and env.rank == 0 else _NoProgress()
        task = bar.add_task(f"rank 0 of {env.world} timing", total=spec.repeats)
        result = safe_measure(
            spec, device, env.rank, group.sync, lambda a, b: bar.update(task, completed=a)
        )
        results = group.gather(result)
        if env.rank != 0:
            _raise_failures(results)
            return None
        return finish(req, sweep, results, concurrent=True)
    finally:
        group.close()


def _raise_failures(results: list[DeviceResult | list[str]]) -> None:
    failed = [r for r in results if not isinstance(r, DeviceResult)]
    if not failed:
        return
    messages = list(dict.fromkeys(m for r in failed for m in r))  # dedupe, keep order
    if not messages:
        messages = ["a worker failed without a message"]
    if len(results) == 1:
        raise VibeError(messages[0])
    raise VibeError(
        f"{len(failed)} of {len(results)} devices did not finish, so no profile was written "
        f"(a profile that silently lacks a GPU would mislead the planner): {'; '.join(messages)}"
    )


def finish(
    req: ProfileRequest,
    sweep: Sweep,
    results: list[DeviceResult | list[str]],
    concurrent: bool,
) -> ProfileOutcome:
    """Results (global rank order) -> the profile, with quick fit and validation if asked."""
    _raise_failures(results)
    done = [r for r in results if isinstance(r, DeviceResult)]
    quick = _quick_curves(req, sweep, done) if sweep.base is not None else None
    entries = []
    for i, r in enumerate(done):
        telemetry = dict(r.telemetry or {})
        telemetry["torch_device"] = r.device
        if quick is not None:
            curve = quick["curves"][i]
        else:  # non-decreasing median; p10/p90 as measured
            curve = GpuCurve(r.tokens, isotonic(r.median_us), r.p10_us, r.p90_us)
        entries.append(GpuEntry(i, curve, r.host, r.name, r.uuid, telemetry))
    profile = GpuProfile(sweep.spec.shape, entries, _method(sweep, done, concurrent))
    quick_block = None
    if quick is not None:
        quick_block = {k: v for k, v in quick.items() if k != "curves"}
        profile.extra["quick"] = quick_block
    validation = None
    if sweep.spec.vectors:
        curves = [time_curve(e.curve) for e in entries]
        validation = validation_block(
            [e.id for e in entries],
            curves,
            sweep.spec.vectors,
            [r.vector_us for r in done],
            req.seed,
        )
        profile.extra["validation"] = validation
    return ProfileOutcome(profile, req.out, quick_block, validation)


def _method(sweep: Sweep, done: list[DeviceResult], concurrent: bool) -> dict[str, Any]:
    import torch

    spec = sweep.spec
    backends = sorted({r.backend for r in done})
    method: dict[str, Any] = {
        "backend": backends[0] if len(backends) == 1 else "mixed: " + ",".join(backends),
        "experts_per_gpu": spec.experts,
        "repeats": spec.repeats,
        "concurrent": concurrent,
        "device": sweep.device_kind,
        "timer": "cuda_events" if sweep.device_kind == "cuda" else "perf_counter",
        "warmup_s": spec.warmup_s,
        "weight_copies": max(r.weight_copies for r in done),
        "curve": "median of shuffled rounds, made non-decreasing (isotonic); p10/p90 raw",
        "torch": str(torch.__version__),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
    }
    if sweep.model is not None:
        m = sweep.model
        method["model"] = {
            "name": m.name,
            "source": m.source,
            "num_experts": m.num_experts,
            "top_k": m.top_k,
            "keys": dict(m.keys_used),
        }
    elif sweep.base is not None and isinstance(sweep.base.method.get("model"), dict):
        method["model"] = sweep.base.method["model"]
    if sweep.base is not None:
        method["mode"] = "quick"
    return method


def _quick_curves(req: ProfileRequest, sweep: Sweep, done: list[DeviceResult]) -> dict[str, Any]:
    """Fit each GPU's scale against its own base curve; the new curve is the base curve scaled."""
    base = sweep.base
    assert base is not None and req.base is not None
    curves, per_gpu = [], []
    for i, r in enumerate(done):
        b = base.gpus[i]
        if b.uuid and r.uuid and b.uuid != r.uuid:
            raise VibeError(
                f"rank {i} is {r.uuid} but --base gpus[{i}] is {b.uuid}; --quick needs the same "
                "GPUs in the same rank order (else run a full profile)"
            )
        if not (b.uuid and r.uuid) and (b.host, b.name) != (r.host, r.name):
            # Without UUIDs on both sides, host and device name are what tie a rank to its base.
            raise VibeError(
                f"rank {i} is {r.name} on {r.host} but --base gpus[{i}] is {b.name} on {b.host}; "
                "--quick needs the same GPUs in the same rank order (else run a full profile)"
            )
        measured = isotonic(r.median_us)
        scale, residual = fit_scale(time_curve(b.curve), r.tokens, measured)

        def scaled(values: list[float] | None, s: float = scale) -> list[float] | None:
            return None if values is None else [v * s for v in values]

        times = [t * scale for t in b.curve.time_us]
        curves.append(
            GpuCurve(list(b.curve.tokens), times, scaled(b.curve.p10_us), scaled(b.curve.p90_us))
        )
        change = (scale - 1.0) * 100.0
        per_gpu.append(
            {
                "id": i,
                "scale": round(scale, 4),
                "change_pct": round(change, 2),
                "fit_residual_pct": round(residual, 2),
                "moved": abs(change) >= req.moved_pct,
            }
        )
    return {
        "base": Path(req.base).name,
        "base_sha256": sha256_file(req.base),
        "tokens": list(sweep.spec.tokens),
        "moved_threshold_pct": req.moved_pct,
        "per_gpu": per_gpu,
        "curves": curves,
    }
