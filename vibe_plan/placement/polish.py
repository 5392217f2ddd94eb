"""Refit a plan to the split a rank-local dispatch rule (`static`, `local`) really makes.

The engine's tables depend only on where the replicated experts sit (their GPUs, in slot order),
so those stay put and every replica keeps its share; the single-replica experts are swapped
around them, priced with the exact shares, e.g. away from a GPU whose replica the draws favour.
"""

from __future__ import annotations

import numpy as np

from vibe_plan.cost import TimeCurve, expert_time
from vibe_plan.placement.heuristic import DOUBLES_MAX_SLOTS, gpu_finish, local_search


def polish_layer(
    row: np.ndarray,
    shares: np.ndarray,
    load: np.ndarray,
    curves: list[TimeCurve],
    slots: int,
    num_nodes: int,
    within_nodes: bool,
) -> np.ndarray:
    """row [P] slot map, shares [P] each slot's share of its expert's tokens, load [E] -> a slot
    map with the same replicated slots on the same GPUs and the singles rearranged.
    `within_nodes`: singles stay on their node (expert groups kept inside nodes)."""
    G = len(curves)
    tokens = load[row] * shares
    p = expert_time(curves, tokens)  # [P, G]: slot s's tokens on each GPU
    item_gpu = np.arange(len(row)) // slots
    frozen = np.bincount(row, minlength=len(load))[row] > 1
    doubles = slots <= DOUBLES_MAX_SLOTS
    blocks = np.split(np.arange(G), num_nodes) if within_nodes else [np.arange(G)]
    new_gpu = item_gpu.copy()
    for gpus in blocks:
        items = np.flatnonzero(np.isin(item_gpu, gpus))
        local = local_search(
            p[np.ix_(items, gpus)],
            row[items],
            item_gpu[items] - gpus[0],
            len(gpus),
            doubles,
            frozen=frozen[items],
        )
        new_gpu[items] = local + gpus[0]
    if gpu_finish(p, new_gpu, G).max() >= gpu_finish(p, item_gpu, G).max():
        return row
    return np.concatenate([np.sort(row[new_gpu == g]) for g in range(G)])
