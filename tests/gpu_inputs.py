"""Shared inputs of the profile-gpus tests: a tiny MoE config.json, and one torch thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# A Mixtral-shaped config small enough to time on a CPU in milliseconds.
TINY = {
    "model_type": "mixtral",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "num_hidden_layers": 2,
    "hidden_act": "silu",
}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: on a busy 2-core machine a 2-thread GEMM stalls whenever a core is taken,
    which turns timing noise into 5x swings; one thread keeps the CPU figures comparable."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
