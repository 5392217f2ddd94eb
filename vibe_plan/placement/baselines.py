"""The engines' static placements: vLLM's `linear` (contiguous blocks) and `round_robin`.

Both fill redundant slots with experts `i % E` (vLLM's initial map), so they ignore load and speed.
"""

from __future__ import annotations

import numpy as np


def linear_map(num_experts: int, num_gpus: int, slots_per_gpu: int) -> np.ndarray:
    """Slot order = logical order: GPU g holds the g-th contiguous block of the list
    `range(E) + [i % E for redundant]`. [P]"""
    P = num_gpus * slots_per_gpu
    return np.arange(P) % num_experts


def round_robin_map(num_experts: int, num_gpus: int, slots_per_gpu: int) -> np.ndarray:
    """Physical expert i (vLLM's order above) goes to GPU i % G. [P]

    Like eplb, this can put two replicas of one expert on one GPU (when G does not divide E);
    readers accept that with a warning.
    """
    P = num_gpus * slots_per_gpu
    phys = np.arange(P) % num_experts  # i-th physical expert in vLLM's order
    gpu_of = np.arange(P) % num_gpus
    phy2log = np.empty(P, dtype=np.int64)
    fill = [0] * num_gpus
    for i in range(P):
        g = gpu_of[i]
        phy2log[g * slots_per_gpu + fill[g]] = phys[i]
        fill[g] += 1
    return phy2log


def tile_layers(row: np.ndarray, num_layers: int) -> np.ndarray:
    return np.tile(row, (num_layers, 1))
