"""The command's options as a measurement sweep: shape, K, token counts, repeats, defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from vibe_plan.artifacts.gpu_profile import ExpertShape, GpuProfile, load_gpu_profile
from vibe_plan.errors import VibeError
from vibe_plan.gpus.fit import pick_quick_points
from vibe_plan.gpus.model_error import draw_vectors
from vibe_plan.gpus.options import BACKENDS, normalize_dtype
from vibe_plan.gpus.worker import BenchSpec
from vibe_plan.model_config import ModelShape, resolve_model

# Dense every 16 tokens across the 64/128 tile steps and the 150-250 token knee, then up to
# prefill-sized loads (several thousand tokens per expert).
CUDA_TOKENS = [1, 2, 4, 8, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240]
CUDA_TOKENS += [256, 288, 320, 384, 448, 512, 640, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192]
CPU_TOKENS = [1, 4, 16, 32, 64, 128, 256]  # a CPU run must finish in seconds

# (cuda, cpu) defaults
REPEATS = (50, 5)
WARMUP_S = (15.0, 0.5)
QUICK_REPEATS = (20, 3)
QUICK_WARMUP_S = (3.0, 0.0)
VALIDATE_TRIALS = (24, 6)
MAX_DEFAULT_EXPERTS = (32, 2)
MAX_SEED = 2**31 - 1  # one seed range for every command (CP-SAT's is a signed 32-bit integer)


@dataclass
class ProfileRequest:
    """The command's options, parsed once (`parse`); `None` means the device kind's default."""

    out: Path
    model: str | None = None
    device: str = "auto"
    gpus: list[int] | None = None  # CUDA indices in EP rank order
    dtype: str | None = None  # normalised: bfloat16, float16, float32
    experts_per_gpu: int | None = None
    tokens: list[int] | None = None  # sorted, distinct
    repeats: int | None = None
    warmup_s: float | None = None
    backend: str = "auto"
    quick: bool = False
    base: Path | None = None
    validate: bool = False
    validate_trials: int | None = None
    moved_pct: float = 3.0
    seed: int = 0

    @classmethod
    def parse(
        cls, gpus: str | None = None, tokens: str | None = None, dtype: str | None = None, **rest
    ) -> ProfileRequest:
        """From the command line's strings; every check that needs no torch and no file."""
        req = cls(
            gpus=None if gpus is None else parse_gpu_list(gpus),
            tokens=None if tokens is None else parse_int_list(tokens, "--tokens"),
            dtype=None if dtype is None else normalize_dtype(dtype),
            **rest,
        )
        check_request(req)
        return req


@dataclass
class Sweep:
    spec: BenchSpec
    device_kind: str
    model: ModelShape | None
    num_experts: int
    top_k: int
    base: GpuProfile | None = None
    base_path: str | None = None


def parse_int_list(text: str, what: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4], sorted and without duplicates; anything else is a clear error."""
    try:
        values = [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise VibeError(f"{what} {text!r}: expected comma-separated integers, e.g. 1,2,4") from None
    if not values:
        raise VibeError(f"{what} is empty; give comma-separated integers, e.g. 1,2,4")
    return sorted(set(values))


def parse_gpu_list(text: str) -> list[int]:
    """--gpus indices, in the given order (it is rank order), each at most once."""
    try:
        values = [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise VibeError(
            f"--gpus {text!r}: expected comma-separated GPU indices, e.g. 0,1"
        ) from None
    if not values:
        raise VibeError("--gpus is empty; give GPU indices, e.g. 0,1")
    if len(set(values)) != len(values):
        raise VibeError(f"--gpus {text!r} names a GPU twice; each GPU is one EP rank")
    return values


def check_visible(indices: list[int], available: int) -> list[int]:
    """The --gpus indices, each one a CUDA device torch can see."""
    bad = [v for v in indices if not 0 <= v < available]
    if bad:
        visible = f"0-{available - 1}" if available else "none"
        raise VibeError(
            f"--gpus {gpu_text(indices)}: no GPU {bad[0]}; {available} visible ({visible}); "
            "check nvidia-smi and CUDA_VISIBLE_DEVICES"
        )
    return indices


def gpu_text(indices: list[int]) -> str:
    return ",".join(str(i) for i in indices)


def check_request(req: ProfileRequest) -> None:
    """Checks that need no torch and no files, run first so mistakes fail in milliseconds."""
    if req.quick and req.base is None:
        raise VibeError("--quick needs --base GPUS.yaml (the full profile to rescale)")
    if req.base is not None and not req.quick:
        raise VibeError("--base is only used with --quick; add --quick or drop --base")
    if not req.quick and not req.model:
        raise VibeError("--model is required: a preset name or a config.json (file or folder)")
    if req.backend not in BACKENDS:
        raise VibeError(f"--backend {req.backend!r}: use one of {', '.join(BACKENDS)}")
    if req.device not in ("auto", "cuda", "cpu"):
        raise VibeError(f"--device {req.device!r}: use auto, cuda or cpu")
    for name, value in (("--repeats", req.repeats), ("--experts-per-gpu", req.experts_per_gpu)):
        if value is not None and value < 1:
            raise VibeError(f"{name} must be at least 1 (got {value})")
    if req.validate_trials is not None and req.validate_trials < 1:
        raise VibeError(f"--validate-trials must be at least 1 (got {req.validate_trials})")
    if req.warmup_s is not None and (req.warmup_s < 0 or not math.isfinite(req.warmup_s)):
        raise VibeError(f"--warmup-s must be zero or more seconds (got {req.warmup_s})")
    if req.tokens is not None and req.tokens[0] < 1:
        raise VibeError(f"--tokens: token counts must be positive (got {req.tokens[0]})")
    if not (math.isfinite(req.moved_pct) and req.moved_pct >= 0):
        raise VibeError(f"--moved-pct is {req.moved_pct}; give a percentage of 0 or more")
    if not 0 <= req.seed <= MAX_SEED:
        raise VibeError(f"--seed is {req.seed}; give a seed from 0 to {MAX_SEED}")


def build_sweep(req: ProfileRequest, device_kind: str, num_devices: int) -> Sweep:
    """Resolve model or base profile and fill every default for this device kind."""
    folder = req.out.parent if str(req.out.parent) else Path(".")
    if not folder.is_dir():
        raise VibeError(f"cannot write {req.out}: folder {folder} does not exist; create it first")
    d = 0 if device_kind == "cuda" else 1
    if req.quick:
        return _quick_sweep(req, device_kind, num_devices, d)
    model = resolve_model(req.model or "")
    dtype = req.dtype or "bfloat16"
    shape = ExpertShape(model.hidden, model.intermediate, dtype, model.gated)
    if req.experts_per_gpu is not None and req.experts_per_gpu > model.num_experts:
        raise VibeError(
            f"--experts-per-gpu {req.experts_per_gpu} exceeds the {model.num_experts} experts of "
            f"{req.model}; give at most {model.num_experts}"
        )
    default_k = min(MAX_DEFAULT_EXPERTS[d], math.ceil(model.num_experts / num_devices))
    experts = req.experts_per_gpu or max(1, default_k)
    tokens = req.tokens or list(CUDA_TOKENS if d == 0 else CPU_TOKENS)
    spec = BenchSpec(
        shape=shape,
        experts=experts,
        tokens=tokens,
        repeats=req.repeats or REPEATS[d],
        warmup_s=WARMUP_S[d] if req.warmup_s is None else req.warmup_s,
        backend=req.backend,
        seed=req.seed,
    )
    sweep = Sweep(spec, device_kind, model, model.num_experts, model.top_k)
    _add_vectors(req, sweep, max(tokens), d)
    return sweep


def _quick_sweep(req: ProfileRequest, device_kind: str, num_devices: int, d: int) -> Sweep:
    assert req.base is not None
    base = load_gpu_profile(req.base)
    if base.num_gpus != num_devices:
        raise VibeError(
            f"--base {req.base} has {base.num_gpus} GPUs but this run has {num_devices}; "
            "--quick rescales the same GPUs in the same rank order (else run a full profile)"
        )
    shape = base.expert
    if req.dtype is not None and req.dtype != shape.dtype:
        raise VibeError(f"--dtype {req.dtype} differs from the base profile's {shape.dtype}")
    model = None
    if req.model:
        model = resolve_model(req.model)
        if (model.hidden, model.intermediate, model.gated) != (
            shape.hidden,
            shape.intermediate,
            shape.gated,
        ):
            raise VibeError(
                f"--model {req.model} has expert {model.hidden}x{model.intermediate} but the base "
                f"profile was measured for {shape.hidden}x{shape.intermediate}; run a full profile"
            )
    base_k = base.method.get("experts_per_gpu")
    if req.experts_per_gpu and base_k and req.experts_per_gpu != base_k:
        raise VibeError(
            f"--experts-per-gpu {req.experts_per_gpu} differs from the base profile's {base_k}: "
            "the per-expert time depends on it; drop the option"
        )
    experts = int(req.experts_per_gpu or base_k or 8)
    backend = req.backend
    if backend == "auto" and base.method.get("backend") in ("grouped_mm", "loop"):
        backend = str(base.method["backend"])  # same kernel path as the base, or the fit is moot
    base_tokens = sorted({t for g in base.gpus for t in g.curve.tokens})
    tokens = req.tokens or pick_quick_points(base_tokens)
    spec = BenchSpec(
        shape=shape,
        experts=experts,
        tokens=tokens,
        repeats=req.repeats or QUICK_REPEATS[d],
        warmup_s=QUICK_WARMUP_S[d] if req.warmup_s is None else req.warmup_s,
        backend=backend,
        seed=req.seed,
    )
    info = base.method.get("model")
    info = info if isinstance(info, dict) else {}
    num_experts = int(model.num_experts if model else info.get("num_experts", 8 * experts))
    top_k = int(model.top_k if model else info.get("top_k", 2))
    sweep = Sweep(spec, device_kind, model, num_experts, top_k, base, str(req.base))
    _add_vectors(req, sweep, max(base_tokens), d)
    return sweep


def _add_vectors(req: ProfileRequest, sweep: Sweep, max_tokens: int, d: int) -> None:
    if not req.validate:
        return
    trials = req.validate_trials or VALIDATE_TRIALS[d]
    sweep.spec.vectors = draw_vectors(
        sweep.num_experts, sweep.top_k, sweep.spec.experts, max_tokens, trials, req.seed
    )
