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
