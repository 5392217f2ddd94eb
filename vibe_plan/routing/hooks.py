"""Forward hooks on a model's router modules that count the experts each valid token was sent to."""

from __future__ import annotations

import re
from typing import Any

import torch

from vibe_plan.errors import VibeError

ROUTER_NAME = re.compile(r"layers\.(\d+)\.(mlp|block_sparse_moe|feed_forward)\.(gate|router)$")
# Routers that return scores and logits but no indices; each picks torch.topk(logits, top_k)
# itself, so repeating that one op on the logits it returned gives exactly its own choice.
LOGITS_ONLY_ROUTERS = ("Llama4Router",)


def find_routers(model: Any) -> dict[int, Any]:
    """Router module of each MoE decoder layer, keyed by absolute decoder-layer id."""
    found: dict[int, Any] = {}
    for name, module in model.named_modules():
        m = ROUTER_NAME.search(name)
        if m is None:
            continue
        layer = int(m.group(1))
        if layer in found:
            raise VibeError(f"two router modules for decoder layer {layer} (second: {name})")
        found[layer] = module
    return dict(sorted(found.items()))


def router_indices(module: Any, output: Any) -> torch.Tensor:
    """The (tokens, k) expert indices a router chose, taken from its output by dtype."""
    outs = output if isinstance(output, (tuple, list)) else (output,)
    ints = [t for t in outs if isinstance(t, torch.Tensor) and not t.is_floating_point()]
    if ints:
        # Prefer the (tokens, k) matrix if a router also returns other integer tensors.
        idx = next((t for t in ints if t.dim() == 2), ints[0])
        return idx.reshape(-1, idx.shape[-1]) if idx.dim() >= 2 else idx.reshape(-1, 1)
    kind = type(module).__name__
    floats = [t for t in outs if isinstance(t, torch.Tensor)]
    if kind in LOGITS_ONLY_ROUTERS and len(floats) >= 2:
        logits = floats[1]
    elif type(module) is torch.nn.Linear and len(floats) == 1:
        # Older gates (transformers 4.x Mixtral/Qwen) are a bare Linear; the block takes
        # softmax then top-k, and softmax keeps the order, so top-k of the logits is its choice.
        logits = floats[0]
    else:
        raise VibeError(
            f"router {kind} returned no integer expert indices; this architecture is not "
            "supported yet (see docs/profile-routing.md)"
        )
    k = int(getattr(module, "top_k", 0) or 0)
    if k <= 0:
        raise VibeError(f"router {kind} has no top_k attribute; cannot read its choice")
    return torch.topk(logits.reshape(-1, logits.shape[-1]), k, dim=-1).indices


class RouterRecorder:
    """Accumulates per-layer expert counts of the valid tokens on the model's own device.

    Set `mask` (bool, one entry per token of the next forward, in flattened batch order) before
    each forward; `take()` returns the counts since the last take as int64 numpy [L, E].
    """

    def __init__(self, routers: dict[int, Any], num_experts: int) -> None:
        self.layer_ids = list(routers)
        self.num_experts = num_experts
        self.mask: torch.Tensor | None = None
        self._acc: dict[int, torch.Tensor] = {}
        self._handles = [
            module.register_forward_hook(self._hook(slot))
            for slot, module in enumerate(routers.values())
        ]

    def _hook(self, slot: int) -> Any:
        def record(module: Any, args: Any, output: Any) -> None:
            idx = router_indices(module, output)
            mask = self.mask
            if mask is not None:
                if mask.numel() != idx.shape[0]:
                    raise VibeError(
                        f"router of layer {self.layer_ids[slot]} saw {idx.shape[0]} tokens, "
                        f"the batch has {mask.numel()}; cannot tell padding apart"
                    )
                idx = idx[mask.to(idx.device)]
            idx = idx.reshape(-1)
            idx = idx[(idx >= 0) & (idx < self.num_experts)]  # engines' -1 / sentinel picks
            counts = torch.bincount(idx, minlength=self.num_experts)
            prev = self._acc.get(slot)
            self._acc[slot] = counts if prev is None else prev + counts.to(prev.device)

        return record

    def take(self) -> Any:
        import numpy as np

        out = np.zeros((len(self.layer_ids), self.num_experts), dtype=np.int64)
        for slot, counts in self._acc.items():
            out[slot] = counts.cpu().numpy()  # one device sync per row, not per hook
        self._acc = {}
        return out

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> RouterRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
