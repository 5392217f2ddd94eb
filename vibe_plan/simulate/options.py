"""The simulator's options and their defaults (import-light: `vibe --help` shows them)."""

from __future__ import annotations

from dataclasses import dataclass

from vibe_plan.defaults import BATCH_TOKENS

MAX_RUNNING = 256  # concurrent requests (vLLM's max_num_seqs, SGLang's max_running_requests)
OUTPUT_LEN = 128  # output tokens of a request whose trace entry gives none
SLO_TTFT_S = 2.0
SLO_TPOT_S = 0.1
LOAD_DRAWS = 32  # distinct expert-load draws per token count
# Non-expert work per layer on the fleet's average GPU, sized for a DeepSeek-V3-class model
# (hidden 7168, MLA, one shared expert) on H100-class GPUs with DP attention; see docs/simulate.md.
LAYER_OVERHEAD_US = 30.0
ATTN_US_PER_TOKEN = 0.7
A2A_US_PER_TOKEN = 0.5
CTX_US_PER_KTOKEN = 0.25


@dataclass(frozen=True)
class SimulateOptions:
    rates: tuple[float, ...] | None = None  # Poisson rates (requests/s); None: the trace's times
    duration_s: float | None = None  # arrivals within this window; None: one pass over the trace
    slo_ttft_s: float = SLO_TTFT_S
    slo_tpot_s: float = SLO_TPOT_S
    dispatch: str = "even"
    token_origin: str = "uniform"
    nodes: int | None = None
    batch_tokens: int = BATCH_TOKENS
    max_running: int = MAX_RUNNING
    layer_overhead_us: float = LAYER_OVERHEAD_US
    attn_us_per_token: float = ATTN_US_PER_TOKEN
    a2a_us_per_token: float = A2A_US_PER_TOKEN
    ctx_us_per_ktoken: float = CTX_US_PER_KTOKEN
    load_draws: int = LOAD_DRAWS
    seed: int = 0
