"""profile-gpus benchmark knobs accepted on the command line: dtype names and GEMM backends.

Plain names: torch dtypes are looked up only where torch is loaded (the light core needs no torch).
"""

from __future__ import annotations

from vibe_plan.errors import VibeError

DTYPES = ("bfloat16", "float16", "float32")
BACKENDS = ("auto", "grouped_mm", "loop")
_DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32"}


def normalize_dtype(name: str) -> str:
    d = _DTYPE_ALIASES.get(name.strip().lower(), name.strip().lower())
    if d not in DTYPES:
        raise VibeError(f"--dtype {name!r} is not supported; use one of {', '.join(DTYPES)}")
    return d
