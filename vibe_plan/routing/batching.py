"""Turn trace requests into token ids and group them into prefill batches of about N tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vibe_plan.errors import VibeError
from vibe_plan.routing.traces import Request

# Filler for count-only traces (Azure, BurstGPT, Mooncake): mixed prose so the routers see
# ordinary text, not one repeated token. Routing then reflects this text, not the real prompts.
FILLER = (
    "The committee reviewed the quarterly report and asked for a clearer summary of costs. "
    "def parse(line):\n    key, value = line.split('=', 1)\n    return key.strip(), value\n"
    "Solve for x: 3x + 7 = 22, so 3x = 15 and x = 5. The integral of 2x is x squared. "
    "Could you recommend a quiet place for dinner near the station? Thanks, that helps a lot. "
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen in the leaf. "
    "SELECT name, count(*) FROM orders GROUP BY name ORDER BY 2 DESC LIMIT 10; "
    "Once upon a time a fox found a well at the edge of the forest and looked inside. "
)


@dataclass
class TokenRequest:
    line: int
    ids: list[int]
    output_len: int | None


def tokenize_requests(
    requests: list[Request], tokenizer: Any, seed: int, batch_tokens: int | None = None
) -> tuple[list[TokenRequest], list[str]]:
    """Token ids per request, and notes on how they were made where that is not the prompt.
    `batch_tokens`: a count-only request longer than this is refused before its ids are built."""
    rng = np.random.default_rng(seed)
    filler: list[int] | None = None
    notes: list[str] = []
    warned_template = False
    out: list[TokenRequest] = []
    for req in requests:
        if req.input_len is not None:
            if batch_tokens is not None:
                check_fits(req.line, req.input_len, batch_tokens)
            if filler is None:
                filler = _ids(tokenizer(FILLER * 4, add_special_tokens=False))
                if not filler:
                    raise VibeError("the tokenizer turns the filler text into no tokens")
                notes.append(
                    "the trace has token counts only: prompts are made up to length from "
                    "filler text, so the routing reflects that text, not the real prompts"
                )
            start = int(rng.integers(len(filler)))  # --seed fixes where each prompt starts
            reps = (start + req.input_len) // len(filler) + 1
            ids = (filler * reps)[start : start + req.input_len]
        elif req.messages is not None:
            if getattr(tokenizer, "chat_template", None):
                ids = _ids(
                    tokenizer.apply_chat_template(
                        req.messages, add_generation_prompt=True, tokenize=True
                    )
                )
            else:
                if not warned_template:
                    notes.append(
                        "the tokenizer has no chat template: chat turns are joined as plain text"
                    )
                    warned_template = True
                text = "\n".join(f"{m.get('role', 'user')}: {m['content']}" for m in req.messages)
                ids = _ids(tokenizer(text))
        else:
            ids = _ids(tokenizer(req.prompt or ""))
        if not ids:
            raise VibeError(f"trace line {req.line}: the prompt tokenizes to no tokens")
        out_len = req.output_len
        if out_len is None and req.output_text is not None:
            out_len = max(1, len(_ids(tokenizer(req.output_text, add_special_tokens=False))))
        out.append(TokenRequest(line=req.line, ids=ids, output_len=out_len))
    return out, notes


def _ids(encoded: Any) -> list[int]:
    if hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    if hasattr(encoded, "tolist"):
        encoded = encoded.tolist()
    if encoded and isinstance(encoded[0], list):  # a batch of one
        encoded = encoded[0]
    return [int(i) for i in encoded]


def prefill_batches(reqs: list[TokenRequest], batch_tokens: int) -> list[list[TokenRequest]]:
    """Consecutive requests (trace order) while the batch stays within `batch_tokens` tokens."""
    if batch_tokens < 1:
        raise VibeError(f"--batch-tokens is {batch_tokens}; it must be at least 1")
    batches: list[list[TokenRequest]] = []
    current: list[TokenRequest] = []
    used = 0
    for r in reqs:
        check_fits(r.line, len(r.ids), batch_tokens)
        if current and used + len(r.ids) > batch_tokens:
            batches.append(current)
            current, used = [], 0
        current.append(r)
        used += len(r.ids)
    if current:
        batches.append(current)
    return batches


def check_fits(line: int, tokens: int, batch_tokens: int) -> None:
    """A prefill batch holds whole requests: one longer than `batch_tokens` is an error rather
    than silently cut, since its tokens would no longer see the prompt they belong to."""
    if tokens > batch_tokens:
        raise VibeError(
            f"trace line {line}: the request has {tokens:,} prompt tokens, more than "
            f"--batch-tokens {batch_tokens}; raise --batch-tokens to at least {tokens} or drop "
            "the request from the trace"
        )
