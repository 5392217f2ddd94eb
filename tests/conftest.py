"""Shared test helpers: run the CLI in-process and capture its streams."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from vibe_plan.cli import main


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def vibe(capsys):
    """Call `vibe(*args)` -> CliResult(code, out, err)."""

    def call(*args: str) -> CliResult:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return call


@pytest.fixture
def inputs(tmp_path):
    """4 heterogeneous GPUs, 16 experts, 3 MoE layers (decoder layers 1..3 of 5)."""
    from placement_inputs import SPEEDS, skewed_counts, write_gpus, write_routing

    src = tmp_path / "in"
    src.mkdir()
    gpus = write_gpus(src / "gpus.yaml", SPEEDS)
    routing = write_routing(src / "routing.npz", skewed_counts(8, 3, 16), num_hidden_layers=5)
    out = tmp_path / "out"
    out.mkdir()
    return gpus, routing, out
