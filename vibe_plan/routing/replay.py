"""Replay batches through a hooked model: one counts row per prefill batch and per decode step."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vibe_plan.errors import VibeError
from vibe_plan.routing.batching import TokenRequest
from vibe_plan.routing.hooks import RouterRecorder


@dataclass
class ReplayResult:
    rows: list[np.ndarray] = field(default_factory=list)  # each int64 [L, E]
    row_phase: list[str] = field(default_factory=list)
    row_tokens: list[int] = field(default_factory=list)
    seconds: float = 0.0
    decode_seconds: float = 0.0  # part of `seconds` spent in decode steps

    @property
    def tokens(self) -> int:
        return int(sum(self.row_tokens))


def replay(
    model: Any,
    recorder: RouterRecorder,
    batches: list[list[TokenRequest]],
    pad_id: int,
    device: Any,
    decode_steps: int,
    record_prefill: bool,
    seed: int,
    on_tokens: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Prefill each batch (left-padded, padding masked out of the counts), then decode it.
    `on_tokens(done, total)`: called as tokens are replayed."""
    result = ReplayResult()
    total = sum(len(r.ids) for b in batches for r in b) + sum(
        _decode_len(r, decode_steps) for b in batches for r in b
    )
    start = time.perf_counter()
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if on_tokens is not None:
            on_tokens(done, total)

    try:
        _run_batches(
            model,
            recorder,
            batches,
            pad_id,
            device,
            decode_steps,
            record_prefill,
            seed,
            result,
            tick,
        )
    except (torch.cuda.OutOfMemoryError, MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        raise VibeError(
            f"out of memory replaying the trace on {device}; lower --batch-tokens (or "
            "--decode-steps), or give the model more memory"
        ) from None
    result.seconds = time.perf_counter() - start
    return result


def _out_of_memory(e: BaseException) -> bool:
    text = str(e).lower()
    return (
        isinstance(e, (torch.cuda.OutOfMemoryError, MemoryError))
        or "out of memory" in text
        or "can't allocate memory" in text
    )


def _run_batches(
    model: Any,
    recorder: RouterRecorder,
    batches: list[list[TokenRequest]],
    pad_id: int,
    device: Any,
    decode_steps: int,
    record_prefill: bool,
    seed: int,
    result: ReplayResult,
    tick: Callable[[int], None],
) -> None:
    params = inspect.signature(model.forward).parameters
    keep = "logits_to_keep" in params
    # transformers 5.2x renamed past_key_values to cache; accept either generation.
    cache_kw = "cache" if "cache" in params else "past_key_values"
    with torch.inference_mode():
        for bi, batch in enumerate(batches):
            ids, mask = _left_pad(batch, pad_id, device)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            kwargs: dict[str, Any] = {"logits_to_keep": 1} if keep else {}
            recorder.mask = mask.reshape(-1).bool()
            out = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=pos,
                use_cache=decode_steps > 0,
                **kwargs,
            )
            prefill = recorder.take()
            n_valid = int(mask.sum())
            if record_prefill:
                _add(result, prefill, "prefill", n_valid)
            tick(n_valid)
            if decode_steps > 0:
                t0 = time.perf_counter()
                _decode(
                    model,
                    recorder,
                    batch,
                    out,
                    mask,
                    pos,
                    decode_steps,
                    seed + bi,
                    result,
                    tick,
                    cache_kw,
                )
                result.decode_seconds += time.perf_counter() - t0


def _decode(
    model: Any,
    recorder: RouterRecorder,
    batch: list[TokenRequest],
    out: Any,
    mask: torch.Tensor,
    pos: torch.Tensor,
    steps: int,
    seed: int,
    result: ReplayResult,
    tick: Any,
    cache_kw: str,
) -> None:
    """Sampled decode; a request leaves the batch after its output length: N output tokens are
    the one the prefill sampled plus N - 1 decode passes (capped at `steps`).

    Finished requests keep their slot in the tensors (simpler than reshaping the cache) but are
    masked out of the counts, as if the server had dropped them from the batch.
    """
    device = mask.device
    remaining = torch.tensor([_decode_len(r, steps) for r in batch], device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    past = _cache(out)
    logits = out.logits[:, -1, :]
    for step in range(int(remaining.max().item()) if len(batch) else 0):
        # Under device_map="auto" the logits live on the last GPU; the generator on the first.
        probs = torch.softmax(logits.float(), dim=-1).to(device)
        nxt = torch.multinomial(probs, 1, generator=gen)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        pos = pos[:, -1:] + 1
        active = remaining > step
        recorder.mask = active
        out = model(
            input_ids=nxt.to(device),
            attention_mask=mask,
            position_ids=pos,
            use_cache=True,
            **{cache_kw: past},
        )
        past = _cache(out)
        logits = out.logits[:, -1, :]
        n_active = int(active.sum())
        _add(result, recorder.take(), "decode", n_active)
        tick(n_active)


def _cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _decode_len(r: TokenRequest, steps: int) -> int:
    """Decode passes of a request: a server's prefill already emits the first output token, so
    an output of N tokens takes N - 1 decode passes (at most `steps`)."""
    return steps if r.output_len is None else max(0, min(r.output_len - 1, steps))


def _add(result: ReplayResult, row: np.ndarray, phase: str, tokens: int) -> None:
    if tokens > 0:
        result.rows.append(row)
        result.row_phase.append(phase)
        result.row_tokens.append(tokens)


def _left_pad(batch: list[TokenRequest], pad_id: int, device: Any) -> tuple[Any, Any]:
    """Left padding so every row's last prompt token is at the end, ready for decode."""
    width = max(len(r.ids) for r in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, r in enumerate(batch):
        ids[i, width - len(r.ids) :] = torch.tensor(r.ids, dtype=torch.long)
        mask[i, width - len(r.ids) :] = 1
    return ids.to(device), mask.to(device)


def check_rows(result: ReplayResult, top_k: int, layer_ids: list[int]) -> list[str]:
    """Each layer of each row must sum to valid tokens x top-k; anything else is worth a note."""
    for b, (row, tokens) in enumerate(zip(result.rows, result.row_tokens, strict=True)):
        sums = row.sum(axis=1)
        bad = np.nonzero(sums != tokens * top_k)[0]
        if len(bad):
            return [
                f"row {b}: layer {layer_ids[bad[0]]} counted {int(sums[bad[0]])} expert picks for "
                f"{tokens} tokens x top-{top_k}; the router may drop or add picks"
            ]
    return []
