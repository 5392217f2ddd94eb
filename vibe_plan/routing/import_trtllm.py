"""TensorRT-LLM expert statistics: meta_info.json + rank{r}.safetensors keyed "{iter}_{layer}"."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from vibe_plan.console import warn
from vibe_plan.errors import VibeError
from vibe_plan.routing.importers import EngineDump

KEY = re.compile(r"^(\d+)_(\d+)$")


def read_trtllm(source: Path) -> EngineDump:
    folder = source.parent if source.is_file() else source
    meta_path = folder / "meta_info.json"
    if not meta_path.is_file():
        raise VibeError(f"{folder}: no meta_info.json (set EXPERT_STATISTIC_PATH to this folder)")
    try:
        meta = json.loads(meta_path.read_text())
        num_experts = int(meta["num_experts"])
        top_k = int(meta.get("num_experts_per_token") or 0) or None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise VibeError(f"{meta_path}: needs num_experts and num_experts_per_token ({e})") from None
    files = sorted(folder.glob("rank*.safetensors"), key=_rank)
    if not files:
        raise VibeError(f"{folder}: no rank*.safetensors files next to meta_info.json")
    from safetensors.numpy import load_file

    totals: dict[tuple[int, int], np.ndarray] = {}
    for f in files:
        try:
            tensors = load_file(str(f))
        except Exception as e:  # safetensors raises its own error type for a bad header
            raise VibeError(f"{f}: not a readable safetensors file ({e})") from None
        for key, arr in tensors.items():
            m = KEY.match(key)
            if m is None:
                raise VibeError(f'{f}: key {key!r} is not "{{iter}}_{{layer}}"')
            if arr.shape != (num_experts,):
                raise VibeError(
                    f"{f}: {key} has shape {list(arr.shape)}; expected "
                    f"[{num_experts}] (num_experts in meta_info.json)"
                )
            it_layer = (int(m.group(1)), int(m.group(2)))
            arr = arr.astype(np.int64)  # ranks each count their own tokens: sum them
            totals[it_layer] = totals[it_layer] + arr if it_layer in totals else arr
    iters = sorted({i for i, _ in totals})
    layers = sorted({layer for _, layer in totals})
    counts = np.zeros((len(iters), len(layers), num_experts), np.int64)
    missing = 0
    for bi, it in enumerate(iters):
        for li, layer in enumerate(layers):
            if (it, layer) in totals:
                counts[bi, li] = totals[(it, layer)]
            else:
                missing += 1
    if missing:
        warn(f"{missing} (iteration, layer) pairs missing from the dump; counted as zero")
    return EngineDump(
        counts,
        "decoder",
        top_k,
        {"files": [f.name for f in files], "iterations": [iters[0], iters[-1]]},
        layer_ids=layers,
    )


def _rank(path: Path) -> int:
    m = re.search(r"(\d+)", path.stem)
    return int(m.group(1)) if m else 0
