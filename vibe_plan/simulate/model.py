"""How long one serving iteration takes: expert loads drawn from the routing profile's rows, priced
with the shared cost model (dispatch rule, per-GPU curves), plus a simple non-expert model.

Per MoE layer the iteration waits for its slowest GPU, counting on each GPU its experts' time and
its share of the non-expert work (attention, dispatch/combine); dense layers cost their
non-expert work. docs/simulate.md states every assumption.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vibe_plan.artifacts.gpu_profile import GpuProfile
from vibe_plan.artifacts.placement import Placement
from vibe_plan.artifacts.routing_profile import RoutingProfile
from vibe_plan.cost import TimeCurve, curves_of, imbalance, slot_gpu_times
from vibe_plan.cost.dispatch import Dispatch, slot_tokens
from vibe_plan.errors import VibeError

# Whole rows summed into one draw at most; past that the sum is scaled to the token count.
MAX_WHOLE_ROWS = 256
SMALL_PICKS = 128  # per layer: below this, picks are drawn by inverse CDF (faster)
LOAD_CACHE_BYTES = 128 << 20  # drawn blocks of picks, shared by every placement
TIME_CACHE_BYTES = 128 << 20  # per-GPU expert times of one placement


@dataclass(frozen=True)
class NonExpertCosts:
    """Per MoE or dense layer, on the fleet's average GPU (microseconds)."""

    layer_overhead_us: float  # fixed per layer: weight reads, launches, norms, the router
    attn_us_per_token: float  # per token the GPU originates: projections, shared expert
    a2a_us_per_token: float  # per token the GPU originates: dispatch + combine (MoE layers)
    ctx_us_per_ktoken: float  # per token, per 1000 tokens of context it attends to

    def check(self) -> None:
        for name, value in (
            ("--layer-overhead-us", self.layer_overhead_us),
            ("--attn-us-per-token", self.attn_us_per_token),
            ("--a2a-us-per-token", self.a2a_us_per_token),
            ("--ctx-us-per-ktoken", self.ctx_us_per_ktoken),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise VibeError(f"{name} is {value}; it must be a finite number >= 0")


class _Lru:
    """A dict that forgets its oldest entries past a byte budget."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.items: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable) -> Any:
        entry = self.items.get(key)
        if entry is None:
            return None
        self.items.move_to_end(key)
        return entry[0]

    def put(self, key: Hashable, value: Any, size: int) -> None:
        self.items[key] = (value, size)
        self.bytes += size
        while self.bytes > self.max_bytes and len(self.items) > 1:
            _, (_, old) = self.items.popitem(last=False)
            self.bytes -= old


# --- expert loads from the routing profile ---------------------------------------------------


def row_tokens(rp: RoutingProfile) -> tuple[np.ndarray, str]:
    """Tokens behind each row [B] and where the count came from: meta.row_tokens (measured),
    else the expert picks / top_k (exact when the router keeps top_k picks per token), else
    meta.batch_tokens."""
    B = rp.num_batches
    meta = rp.meta
    if meta.get("row_tokens") is not None:
        rt = meta["row_tokens"]
        ok = isinstance(rt, list) and len(rt) == B
        ok = ok and all(isinstance(x, int | float) and not isinstance(x, bool) for x in rt)
        arr = np.asarray(rt, dtype=float) if ok else np.zeros(0)
        if not ok or not np.all(np.isfinite(arr)) or (arr < 0).any():
            raise VibeError(
                f"routing profile: meta.row_tokens must list {B} non-negative token counts, "
                "one per row"
            )
        return arr, "meta.row_tokens"
    if meta.get("top_k"):
        picks = rp.counts.sum(axis=2).max(axis=1)
        return picks / float(meta["top_k"]), "expert picks / top_k"
    if meta.get("batch_tokens"):
        return np.full(B, float(meta["batch_tokens"])), "meta.batch_tokens"
    raise VibeError(
        "routing profile: cannot tell how many tokens each row holds (no meta.row_tokens, "
        "top_k or batch_tokens); the simulator needs it to scale rows to a batch"
    )


class LoadSampler:
    """Expert loads [L, E] for an iteration's tokens, drawn from the profile's rows.

    With rows of both phases, prefill and decode tokens draw from their own rows and the two
    loads add up; otherwise an iteration's tokens draw from all rows at once. A draw for `n`
    tokens takes draw j's rows (a seeded sequence, with replacement) whole while they fit, then
    a random subset of one more row's picks for the remainder (per layer, a multinomial of the
    remainder's picks over that row's experts). There are `draws` draws; an iteration picks one
    (seeded), so identical iterations can share their priced result."""

    def __init__(self, rp: RoutingProfile, draws: int, seed: int):
        if draws < 1:
            raise VibeError(f"--load-draws is {draws}; it must be at least 1")
        self.counts = rp.counts.astype(float)
        self.tokens, self.token_source = row_tokens(rp)
        self.draws = draws
        self.seed = seed
        phases = np.asarray(rp.row_phases())
        usable = (self.tokens > 0) & (self.counts.sum(axis=(1, 2)) > 0)
        if not usable.any():
            raise VibeError("routing profile: no row holds any tokens; nothing to sample from")
        pre = np.flatnonzero(usable & (phases == "prefill"))
        dec = np.flatnonzero(usable & (phases == "decode"))
        self.split = len(pre) > 0 and len(dec) > 0
        self.pools = [pre, dec] if self.split else [np.flatnonzero(usable)]
        sums = self.counts.sum(axis=2, keepdims=True)
        self.share = np.divide(self.counts, sums, out=np.zeros_like(self.counts), where=sums > 0)
        self.picks_per_token = sums[..., 0] / np.maximum(self.tokens, 1e-12)[:, None]  # [B, L]
        self.cache = _Lru(LOAD_CACHE_BYTES)

    def key(self, u: np.ndarray, n_prefill: int, n_decode: int) -> tuple[int, int, int, int]:
        """The iteration's draw for two uniforms `u` in [0, 1): (tokens, draw) per part."""
        j0, j1 = int(u[0] * self.draws), int(u[1] * self.draws)
        if self.split:
            return (n_prefill, j0 if n_prefill else 0, n_decode, j1 if n_decode else 0)
        return (n_prefill + n_decode, j0, 0, 0)

    def load(self, key: tuple[int, ...]) -> np.ndarray:
        n0, j0, n1, j1 = key
        out = self._part(0, n0, j0)
        if n1:
            out = out + self._part(1, n1, j1)
        return out

    def _part(self, pool: int, n: int, j: int) -> np.ndarray:
        L, E = self.counts.shape[1:]
        total = np.zeros((L, E))
        if n <= 0:
            return total
        rows = self._rows(pool, j)
        left = float(n)
        for m, r in enumerate(rows):
            if self.tokens[r] <= left:
                total += self.counts[r]
                left -= self.tokens[r]
                if left < 0.5:
                    break
                continue
            rest = int(round(left))
            for bit in range(rest.bit_length()):
                if rest >> bit & 1:
                    total += self._block(pool, j, m, r, bit)
            left = 0.0
            break
        if left >= 0.5:  # rows far smaller than the batch: scale the sum of the rows drawn
            total *= n / (n - left)
        return total

    def _rows(self, pool: int, j: int) -> np.ndarray:
        """Draw j's rows, in order (seeded): the moments an iteration's tokens come from."""
        key = ("rows", pool, j)
        rows = self.cache.get(key)
        if rows is None:
            rng = np.random.default_rng([self.seed, 0x10AD, pool, j])
            pick = self.pools[pool]
            rows = pick[rng.integers(len(pick), size=MAX_WHOLE_ROWS)]
            self.cache.put(key, rows, rows.nbytes)
        return rows

    def _block(self, pool: int, j: int, m: int, r: int, bit: int) -> np.ndarray:
        """The picks of 2**bit tokens of row r (draw j, position m): per layer, a multinomial
        of 2**bit x (picks per token) over the row's experts. A remainder of `left` tokens is the
        sum of the blocks of its binary digits, each drawn independently from the same row: in
        law, one multinomial of `left` tokens' picks. Blocks are kept and reused."""
        key = (pool, j, m, bit)
        block = self.cache.get(key)
        if block is not None:
            return block
        rng = np.random.default_rng([self.seed, 0xB10C, pool, j, m, bit])
        picks = np.rint((1 << bit) * self.picks_per_token[r]).astype(np.int64)
        L, E = self.counts.shape[1:]
        if picks.max(initial=0) <= SMALL_PICKS:  # few picks: inverse CDF, same law, faster
            cdf = np.cumsum(self.share[r], axis=1)
            cdf[:, -1] = 1.0  # layers without picks have picks 0 and draw nothing
            which = np.repeat(np.arange(L), picks)
            u = rng.random(len(which)) + which
            idx = np.searchsorted((cdf + np.arange(L)[:, None]).ravel(), u, side="right")
            block = np.bincount(idx, minlength=L * E).reshape(L, E).astype(np.float32)
        else:
            block = np.zeros((L, E), dtype=np.float32)
            for layer in np.flatnonzero(picks > 0):
                block[layer] = rng.multinomial(picks[layer], self.share[r, layer])
        self.cache.put(key, block, block.nbytes)
        return block


# --- the step time of one placement --------------------------------------------------------------


def speed_factors(curves: list[TimeCurve]) -> np.ndarray:
    """Each GPU's time at a mid token count (geometric middle of the fleet's measured range)
    over the fleet mean: how much slower (> 1) or faster its non-expert work runs. [G]"""
    low = min(float(c.tokens[1]) for c in curves)
    high = max(float(c.tokens[-1]) for c in curves)
    mid = math.sqrt(low * high)
    t = np.array([float(c(mid)) for c in curves])
    return t / t.mean()


class StepModel:
    """Iteration times of one placement: cost-model expert times (cached per load draw) plus the
    non-expert model, both on the same GPUs."""

    def __init__(
        self,
        gpus: GpuProfile,
        routing: RoutingProfile,
        placement: Placement,
        dispatch: Dispatch,
        costs: NonExpertCosts,
        sampler: LoadSampler,
    ):
        self.curves = curves_of(gpus)
        self.G = gpus.num_gpus
        self.phy2log = placement.phy2log
        self.layer_ids = [int(x) for x in routing.layer_ids]
        self.L = len(self.layer_ids)
        self.dense_layers = max(routing.num_hidden_layers - self.L, 0)
        self.dispatch = dispatch
        self.costs = costs
        self.sampler = sampler
        self.speed = speed_factors(self.curves)
        origin = dispatch.origin
        self.share = np.full(self.G, 1.0 / self.G) if origin is None else np.asarray(origin)
        self.cache = _Lru(TIME_CACHE_BYTES)

    def expert_times(self, keys: list[tuple[int, ...]]) -> list[tuple[np.ndarray, float]]:
        """Per-GPU expert time of every MoE layer [L, G] and its mean imbalance, per load key;
        the keys not yet priced go through the cost model in one call."""
        found = {k: self.cache.get(k) for k in dict.fromkeys(keys)}
        missing = [k for k, v in found.items() if v is None]
        if missing:
            loads = np.stack([self.sampler.load(k) for k in missing])  # [M, L, E]
            tokens = slot_tokens(self.phy2log, loads, self.G, self.dispatch, self.layer_ids)
            times = slot_gpu_times(self.curves, tokens)  # [M, L, G]
            imb = imbalance(times).mean(axis=1)
            for i, k in enumerate(missing):
                value = (times[i], float(imb[i]))
                self.cache.put(k, value, times[i].nbytes)
                found[k] = value
        return [found[k] for k in keys]

    def steps(
        self, expert_us: np.ndarray, tokens: int, ctx_keys: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Times of k iterations of `tokens` scheduled tokens each, from their per-GPU expert
        times [k, L, G] and the context their tokens attend to (`ctx_keys` [k], key tokens summed
        over the scheduled tokens): (iteration time [k], what the experts add to it [k]), us.

        Each GPU adds its share of the non-expert work, scaled by its speed; a MoE layer waits
        for its slowest GPU; dense layers cost their non-expert work (no all-to-all)."""
        c = self.costs
        tok = tokens * self.share  # [G]
        base = (c.layer_overhead_us + c.attn_us_per_token * tok)[None, :] + (
            c.ctx_us_per_ktoken / 1000.0
        ) * np.asarray(ctx_keys, dtype=float)[:, None] * self.share[None, :]  # [k, G]
        moe_other = self.speed * (base + c.a2a_us_per_token * tok)  # [k, G]
        dense = self.dense_layers * (self.speed * base).max(axis=1)  # [k]
        moe = (expert_us + moe_other[:, None, :]).max(axis=2).sum(axis=1)
        total = moe + dense
        without = self.L * moe_other.max(axis=1) + dense
        return total, total - without
