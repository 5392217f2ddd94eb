"""Default values shared by the commands and the library, kept in one place (and import-light, so
the CLI can show them in --help without loading the solver)."""

from __future__ import annotations

TIME_LIMIT_S = 0.1  # CP-SAT deterministic seconds per layer (reproducible, unlike wall clock)
CPSAT_WORKERS = 2
BATCH_TOKENS = 4096  # tokens per prefill batch when replaying or regrouping a trace
TARGET_GAP = 1e-3  # a layer within 0.1% of its bound counts as certified
