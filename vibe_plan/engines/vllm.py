"""vLLM: per-request `routed_experts` load dumps, as .npy files or base64 .npy (or nested lists) in
JSONL responses (`--enable-return-routed-experts`).

vLLM's capturer sizes its buffer by every decoder layer (`num_hidden_layers` of the text config)
and indexes it by the decoder-layer index; the buffer starts zeroed and only MoE layers write to
it, so a dense layer reads as expert 0 for every token. A response's array is
[tokens - 1, decoder layers, top_k] (the last sampled token is never run), uint8 up to 256
experts, else uint16. vLLM has no startup placement file to read or write (mainline loads no
static placement).
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vibe_plan.artifacts.io import json_lines
from vibe_plan.artifacts.routing_profile import MAX_EXPERTS
from vibe_plan.engines.common import EngineDump
from vibe_plan.errors import VibeError


def read_dump(source: Path, num_experts: int | None, batch_tokens: int) -> EngineDump:
    """Requests in file order, joined into rows of about `batch_tokens` tokens each."""
    if batch_tokens < 1:
        raise VibeError(f"--batch-tokens is {batch_tokens}; it must be at least 1")
    arrays = list(_arrays(source))
    if not arrays:
        raise VibeError(f"{source}: no routed_experts arrays found")
    shape = None
    for where, arr in arrays:
        if arr.ndim != 3:
            raise VibeError(
                f"{where}: routed_experts has shape {list(arr.shape)}; expected "
                "[tokens, decoder layers, top_k]"
            )
        if shape is not None and arr.shape[1:] != shape:
            raise VibeError(
                f"{where}: routed_experts has shape {list(arr.shape)}; expected "
                f"[seq_len, {shape[0]}, {shape[1]}] like the first one"
            )
        shape = arr.shape[1:]
        if arr.dtype.kind not in "iu":
            raise VibeError(f"{where}: routed_experts must hold integer expert ids")
        if arr.size and int(arr.min()) < -1:
            raise VibeError(
                f"{where}: routed_experts holds expert id {int(arr.min())}; ids are >= 0 "
                "(-1: not routed)"
            )
    assert shape is not None
    if 0 in shape or not any(a.size and int(a.max()) >= 0 for _, a in arrays):
        raise VibeError(
            f"{source}: every routed_experts array is empty (no routed token); is this a dump "
            "of requests served with --enable-return-routed-experts?"
        )
    notes = []
    if num_experts is None:
        num_experts = int(max(int(a.max()) for _, a in arrays if a.size)) + 1
        if num_experts > MAX_EXPERTS:
            raise VibeError(
                f"{source}: routed_experts holds expert id {num_experts - 1}, more than any "
                "model has; is the dump corrupt? (pass --model to check ids against the config)"
            )
        notes.append(f"no --model: assuming {num_experts} experts (the largest id seen + 1)")
    n_layers, top_k = int(shape[0]), int(shape[1])
    rows: list[np.ndarray] = []
    row = np.zeros((n_layers, num_experts), np.int64)
    used = 0
    only_zero = np.ones(n_layers, bool)  # every pick of the layer is expert 0: vLLM's fill
    repeats = np.zeros(n_layers, bool)  # a token lists one expert twice: no router does that
    for where, arr in arrays:
        if arr.size:
            only_zero &= (arr == 0).all(axis=(0, 2))
            picks = np.sort(arr, axis=2)
            repeats |= ((picks[..., 1:] == picks[..., :-1]) & (picks[..., 1:] >= 0)).any(
                axis=(0, 2)
            )
        if arr.size and int(arr.max()) >= num_experts:
            raise VibeError(f"{where}: expert id {int(arr.max())} >= {num_experts} experts")
        if used and used + arr.shape[0] > batch_tokens:  # requests join batches in order
            rows.append(row)
            row, used = np.zeros_like(row), 0
        for layer in range(n_layers):
            ids = arr[:, layer, :].reshape(-1)
            ids = ids[ids >= 0].astype(np.int64)  # -1 marks positions the engine did not route
            row[layer] += np.bincount(ids, minlength=num_experts)
        used += arr.shape[0]
    rows.append(row)
    return EngineDump(
        np.stack(rows),
        "decoder",
        top_k,
        {"requests": len(arrays), "batch_tokens": batch_tokens},
        notes=notes,
        filler_layers=[int(i) for i in np.flatnonzero(only_zero)],
        repeat_layers=[int(i) for i in np.flatnonzero(repeats)],
    )


def _arrays(source: Path) -> Iterator[tuple[str, np.ndarray]]:
    if source.is_dir():
        files = sorted(source.glob("*.npy"))
        if not files:
            raise VibeError(f"{source}: no .npy files in the folder")
        for f in files:
            yield str(f), _npy_file(f)
    elif source.suffix == ".npy":
        yield str(source), _npy_file(source)
    else:
        yield from _jsonl(source)


def _npy_file(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise VibeError(f"{path}: not a readable .npy array ({e})") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        arr.close()
        raise VibeError(f"{path}: an .npz archive, not one .npy array of routed_experts")
    return arr


def _jsonl(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    for n, obj in json_lines(path):
        found = list(_find(obj))
        if not found:
            raise VibeError(
                f'{path}:{n}: no "routed_experts" field (start vLLM with '
                "--enable-return-routed-experts)"
            )
        for value in found:
            yield f"{path}:{n}", _decode(value, f"{path}:{n}")


def _find(obj: Any) -> Iterator[Any]:
    """Every `routed_experts` value, wherever the response nests it (choices, outputs, ...)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "routed_experts" and value is not None:
                yield value
            else:
                yield from _find(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from _find(item)


def _decode(value: Any, where: str) -> np.ndarray:
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
            arr = np.load(io.BytesIO(raw), allow_pickle=False)
            if isinstance(arr, np.ndarray):
                return arr
            raise ValueError("an .npz archive, not one array")
        except (binascii.Error, ValueError, OSError, EOFError) as e:
            raise VibeError(
                f"{where}: routed_experts is not base64 of a .npy array ({e})"
            ) from None
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError, OverflowError, RecursionError):
        arr = np.asarray(None)
    if arr.dtype.kind not in "iu" or arr.ndim == 0:
        raise VibeError(
            f"{where}: routed_experts is neither base64 .npy nor a nested list of integer "
            "expert ids"
        )
    return arr
