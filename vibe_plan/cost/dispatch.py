"""Dispatch rules: how a serving engine splits an expert's tokens over its replicas.

Part of the cost model: solve, evaluate and the simulator turn expert loads into tokens per
physical slot with one of these rules, so that a plan is scored for the split the engine makes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from vibe_plan.errors import VibeError

RULES: dict[str, str] = {
    "even": "n/r to every replica: SGLang dynamic (no a2a backend), TensorRT-LLM, vLLM, EPLB",
    "static": "SGLang static: each EP rank sends all its tokens to one replica (own GPU, "
    "else first on its node, else a seeded fair pick)",
    "local": "SGLang dynamic with an a2a backend (DeepEP): own GPU, else first on the node, "
    "else an even draw over all replicas",
    "lp": "SGLang lp: per batch, the engine's LP balances tokens per GPU over the replicas",
}

# SGLang seeds its static dispatch tables with this value (compute_logical_to_rank_dispatch_...).
STATIC_SEED = 42
# The engine's LP runs a fixed number of interior-point steps and gives up on this test.
LP_ITERS = 5


class DrawBudgetExceeded(Exception):
    """The exact static tables would take longer than `MAX_DRAW_STEPS` generator steps."""


# Exact static tables replay every rank's shuffles; past this many generator steps (2-3 s
# on one core; EP128-sized eplb plans) the draws are taken at their expectation instead.
MAX_DRAW_STEPS = 10_000_000


@dataclass(frozen=True)
class Dispatch:
    """A dispatch rule and what it needs to know about the deployment.

    `origin[g]` is the share of a batch's tokens that EP rank g originates (routes); with DP
    attention and a balanced front end every rank originates about 1/EP. Only the rank-local
    rules (`static`, `local`) depend on it. `num_hidden_layers` places the MoE layers among all
    decoder layers: SGLang draws its static tables over every decoder layer in turn, dense ones
    included, so the draws of a layer depend on the layers before it.
    """

    rule: str = "even"
    num_nodes: int = 1
    origin: tuple[float, ...] | None = None  # None: every rank originates an equal share
    num_hidden_layers: int | None = None  # None: the MoE layers are all the decoder layers

    def __post_init__(self):
        if self.rule not in RULES:
            raise VibeError(
                f"unknown dispatch rule {self.rule!r}; choose one of {', '.join(RULES)}"
            )


def origin_shares(spec: str, num_gpus: int, num_nodes: int) -> tuple[float, ...] | None:
    """`uniform` -> None; comma-separated weights, one per EP rank or one per node -> shares."""
    if spec.strip() in ("", "uniform"):
        return None
    try:
        w = np.array([float(x) for x in spec.split(",")])
    except ValueError:
        raise VibeError(
            f"--token-origin {spec!r}: give 'uniform' or comma-separated weights"
        ) from None
    if len(w) == num_nodes and num_nodes != num_gpus:
        w = np.repeat(w / (num_gpus // num_nodes), num_gpus // num_nodes)
    if len(w) != num_gpus:
        raise VibeError(
            f"--token-origin has {len(w)} weights; give one per EP rank ({num_gpus}) "
            f"or one per node ({num_nodes})"
        )
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise VibeError("--token-origin weights must be finite, non-negative, not all zero")
    return tuple(float(x) for x in w / w.sum())


def decoder_map(phy2log: np.ndarray, layer_ids: list[int], num_hidden_layers: int | None):
    """MoE rows placed among all decoder layers, dense ones holding the trivial map that our
    SGLang export writes for them: -> ([H, P] rows, index of each MoE layer in them)."""
    L, P = phy2log.shape
    E = int(phy2log.max()) + 1
    H = num_hidden_layers if num_hidden_layers is not None else L
    ids = list(layer_ids) if num_hidden_layers is not None else list(range(L))
    rows = np.tile(np.arange(P) % E, (H, 1))
    rows[ids] = phy2log
    return rows, ids


def rank_choices(
    rows: np.ndarray,
    num_gpus: int,
    num_nodes: int,
    fair: bool,
    seed: int = STATIC_SEED,
    max_steps: int | None = None,
) -> list[dict[int, np.ndarray]]:
    """For every layer row and every replicated expert, the replica each EP rank sends to:
    [layer]{expert: slot per rank [G]}, with -1 where the rank draws evenly over all replicas
    (`fair=False`, the `local` rule). Single-replica experts are absent (their one slot is it).

    SGLang's order: a replica on the rank's own GPU (the first), else, when the rank's node holds
    some but not all replicas, the first on that node. Other ranks (`fair`) draw: each rank builds
    its table from its own view, in which every expert it has a near replica of has one candidate,
    so each rank's generator (seeded alike) advances only on the experts it must draw for, layer
    by layer, expert by expert: the replicas repeated as evenly as possible over the drawing
    ranks, a sample for the remainder, shuffled, and the rank takes its own position. The picks
    of different ranks are therefore not balanced per replica, only in expectation.
    Raises DrawBudgetExceeded past `max_steps` generator steps."""
    budget = MAX_DRAW_STEPS if max_steps is None else max_steps
    streams = _Streams(seed, num_gpus, budget) if fair else None
    H, P = rows.shape
    S = P // num_gpus
    per_node = S * (num_gpus // num_nodes)
    rank_node = np.arange(num_gpus) // (num_gpus // num_nodes)
    out: list[dict[int, np.ndarray]] = []
    for row in rows:
        order = np.argsort(row, kind="stable")
        starts = np.searchsorted(row[order], np.arange(row.max() + 2))
        layer: dict[int, np.ndarray] = {}
        for e in np.flatnonzero(np.diff(starts) > 1):
            slots = order[starts[e] : starts[e + 1]]  # ascending physical id
            pick = _nearest(slots, slots // S, slots // per_node, rank_node, num_nodes)
            rest = np.flatnonzero(pick < 0)
            if streams is not None and len(rest):
                pick[rest] = streams.fair_draws(rest, [int(s) for s in slots])
            layer[int(e)] = pick
        out.append(layer)
    return out


class _Streams:
    """One `random.Random(seed)` per EP rank, as SGLang has, but ranks whose generators stand at
    the same point share one object (a rank's draws depend only on where its generator stands),
    so a draw made by many ranks alike is computed once per distinct state, not once per rank."""

    def __init__(self, seed: int, num_ranks: int, max_steps: int):
        self.state_of = np.zeros(num_ranks, dtype=np.int64)  # rank -> state id
        self.states: dict[int, random.Random] = {0: random.Random(seed)}
        self.steps_left = max_steps

    def fair_draws(self, ranks: np.ndarray, cand: list[int]) -> np.ndarray:
        """SGLang's fair choice for the drawing `ranks`: each builds the same list (replicas
        repeated as evenly as possible, a sample for the rest), shuffles it with its own
        generator and takes the entry at its own position among the drawing ranks."""
        whole, extra = divmod(len(ranks), len(cand))
        out = np.empty(len(ranks), dtype=np.int64)
        for sid in np.unique(self.state_of[ranks]):
            mine = self.state_of[ranks] == sid
            self.steps_left -= len(ranks) + extra
            if self.steps_left < 0:
                raise DrawBudgetExceeded
            rng = self.states[int(sid)]
            if (self.state_of == sid).sum() > mine.sum():  # others stay where this state is
                rng = random.Random()
                rng.setstate(self.states[int(sid)].getstate())
            drawn = cand * whole + rng.sample(cand, k=extra)
            _shuffle(rng, drawn)
            out[mine] = np.asarray(drawn)[np.flatnonzero(mine)]
            new = max(self.states) + 1
            self.states[new] = rng
            self.state_of[ranks[mine]] = new
            if not (self.state_of == sid).any():
                del self.states[int(sid)]
        return out


def _shuffle(rng: random.Random, x: list) -> None:
    """`random.Random.shuffle` step for step (Fisher-Yates from the end, each index drawn by
    rejection from `getrandbits(bit_length)`), without its per-step call overhead."""
    bits = rng.getrandbits
    for i in range(len(x) - 1, 0, -1):
        m = i + 1
        k = m.bit_length()
        j = bits(k)
        while j >= m:
            j = bits(k)
        x[i], x[j] = x[j], x[i]


def _nearest(slots, slot_gpu, slot_node, rank_node, num_nodes) -> np.ndarray:
    """Each rank's replica on its own GPU, else the first on its node when the node holds some
    but not all of them; -1 where neither applies. [G]"""
    G = len(rank_node)
    pick = np.full(G, -1, dtype=np.int64)
    if num_nodes > 1:
        on_node = np.bincount(slot_node, minlength=num_nodes)
        narrows = (on_node > 0) & (on_node < len(slots))
        first = np.full(num_nodes, -1, dtype=np.int64)
        for s, n in zip(slots[::-1], slot_node[::-1], strict=True):
            first[n] = s  # the lowest slot wins
        ok = narrows[rank_node]
        pick[ok] = first[rank_node[ok]]
    for s, g in zip(slots[::-1], slot_gpu[::-1], strict=True):
        pick[g] = s  # own GPU first, its lowest slot
    return pick


def rank_shares(
    phy2log: np.ndarray, num_gpus: int, d: Dispatch, layer_ids: list[int]
) -> np.ndarray:
    """Share of each expert's tokens that each physical slot serves under a rank-local rule
    (`static`, `local`): [L, P], summing to 1 over an expert's replicas."""
    return rank_split(phy2log, num_gpus, d, layer_ids)[0]


# solve and evaluate ask for one plan's shares several times; the static draws are the costly
# part, so the last few results are kept.
_SPLITS: dict[tuple, tuple[np.ndarray, bool]] = {}


def rank_split(
    phy2log: np.ndarray, num_gpus: int, d: Dispatch, layer_ids: list[int]
) -> tuple[np.ndarray, bool]:
    """`rank_shares` and whether they are exact: False when the static draws were too many to
    replay (MAX_DRAW_STEPS) and the drawing ranks were spread evenly, their expectation."""
    key = (phy2log.tobytes(), phy2log.shape, num_gpus, d, tuple(layer_ids))
    if key in _SPLITS:
        return _SPLITS[key]
    rows, ids = decoder_map(phy2log, layer_ids, d.num_hidden_layers)
    exact = True
    try:
        choices = rank_choices(rows, num_gpus, d.num_nodes, fair=d.rule == "static")
    except DrawBudgetExceeded:
        choices = rank_choices(rows, num_gpus, d.num_nodes, fair=False)
        exact = False
    origin = np.full(num_gpus, 1.0 / num_gpus) if d.origin is None else np.asarray(d.origin)
    w = np.ones(phy2log.shape, dtype=float)
    for i, h in enumerate(ids):
        row = phy2log[i]
        for e, pick in choices[h].items():
            slots = np.flatnonzero(row == e)
            share = np.zeros(len(row))
            np.add.at(share, pick[pick >= 0], origin[pick >= 0])
            share[slots] += origin[pick < 0].sum() / len(slots)  # an even draw
            w[i, slots] = share[slots]
    if len(_SPLITS) >= 8:
        _SPLITS.pop(next(iter(_SPLITS)))
    _SPLITS[key] = (w, exact)
    return w, exact


def even_shares(phy2log: np.ndarray) -> np.ndarray:
    """1 / (replica count) for every slot: [L, P]."""
    E = int(phy2log.max()) + 1
    cnt = np.stack([np.bincount(row, minlength=E) for row in phy2log])
    return 1.0 / np.take_along_axis(cnt, phy2log, axis=1)


def lp_shares(row: np.ndarray, counts: np.ndarray, num_gpus: int) -> np.ndarray:
    """SGLang's `lp` split for one layer, every batch: counts [B, E] -> shares [B, P].

    The engine's LP: minimise M with, per GPU, its single-replica experts' tokens plus its
    replicas' shares <= M, shares of an expert summing to its count (all normalised by the
    batch's total). It runs LP_ITERS affine-scaling steps from x = 1, with an artificial column
    (cost 1000) that makes x = 1 feasible, in float32; when its convergence test fails every
    replica gets weight 0.5, an even split. Tokens then pick replicas by those weights."""
    P = len(row)
    E = counts.shape[1]
    S = P // num_gpus
    cnt = np.bincount(row, minlength=E)
    rep_slots = np.flatnonzero(cnt[row] > 1)
    if len(rep_slots) == 0:
        return np.ones((counts.shape[0], P))
    single_slots = np.flatnonzero(cnt[row] == 1)
    rep_experts = np.flatnonzero(cnt > 1)
    n_red, G = len(rep_slots), num_gpus
    C = (row[rep_slots][None, :] == rep_experts[:, None]).astype(np.float32)
    B2 = (rep_slots[None, :] // S == np.arange(G)[:, None]).astype(np.float32)
    top = np.hstack([C, np.zeros((len(rep_experts), G + 1), np.float32)])
    bottom = np.hstack([B2, np.eye(G, dtype=np.float32), -np.ones((G, 1), np.float32)])
    A_base = np.vstack([top, bottom])
    nc, nv = A_base.shape[0], A_base.shape[1] + 1
    c = np.zeros(nv, np.float32)
    c[-2], c[-1] = 1.0, 1000.0
    single_gpu = single_slots // S
    out = np.empty((counts.shape[0], P))
    for b, count in enumerate(counts.astype(np.float32)):
        total = max(float(count.sum()), 1.0)
        t1 = count[row[single_slots]] / np.float32(total)
        gpu_single = np.bincount(single_gpu, weights=t1, minlength=G).astype(np.float32)
        rhs = np.concatenate([count[rep_experts] / np.float32(total), -gpu_single])
        A = np.hstack([A_base, (rhs - A_base.sum(axis=1))[:, None]]).astype(np.float32)
        x = _affine_scaling(A, rhs.astype(np.float32), c, nc)
        prob = np.zeros(P)
        prob[rep_slots] = np.maximum(x[:n_red], 0.0)
        prob[single_slots] = 1.0
        out[b] = _normalise_per_expert(prob, row, E)
    return out


def _affine_scaling(A: np.ndarray, b: np.ndarray, c: np.ndarray, nc: int) -> np.ndarray:
    x = np.ones(A.shape[1], np.float32)
    d_max = np.float32(0.0)
    jitter = np.float32(1e-12) * np.eye(nc, dtype=np.float32)
    for _ in range(LP_ITERS):
        ax2 = A * (x * x)[None, :]
        try:
            delta = np.linalg.solve(ax2 @ A.T + jitter, ax2 @ c)
        except np.linalg.LinAlgError:
            return np.full_like(x, 0.5)
        d = x * (c - A.T @ delta)
        d_max = d.max()
        alpha = np.float32(0.999) / d_max if d_max > 1e-9 else np.float32(1.0)
        x = (x * (1.0 - alpha * d)).astype(np.float32)
    residual = float(np.abs(A @ x - b).max())
    if d_max < 0.1 and 0.0 <= x[-1] < 1e-4 and residual < 0.05:
        return x
    return np.full_like(x, 0.5)


def _normalise_per_expert(prob: np.ndarray, row: np.ndarray, E: int) -> np.ndarray:
    """Weights -> each replica's expected share of its expert's tokens (even if all are 0)."""
    total = np.bincount(row, weights=prob, minlength=E)
    cnt = np.bincount(row, minlength=E)
    return np.where(total[row] > 0, prob / np.where(total[row] > 0, total[row], 1), 1 / cnt[row])


def split_note(phy2log: np.ndarray, num_gpus: int, d: Dispatch, layer_ids: list[int]) -> str:
    """A line for the user when the static split of this plan is an expectation, else ''."""
    if d.rule != "static" or rank_split(phy2log, num_gpus, d, layer_ids)[1]:
        return ""
    return (
        f"static dispatch: replaying every rank's draws would take over {MAX_DRAW_STEPS:,} "
        "generator steps, so the drawing ranks are spread evenly over the replicas (their "
        "expectation); a single replica's real share may differ by a few percent"
    )


def slot_tokens(
    phy2log: np.ndarray,
    counts: np.ndarray,
    num_gpus: int,
    d: Dispatch,
    layer_ids: list[int] | None = None,
) -> np.ndarray:
    """Tokens each physical slot serves, for every batch: counts [B, L, E] -> [B, L, P]."""
    B, L, _ = counts.shape
    expert_tokens = np.take_along_axis(counts, np.broadcast_to(phy2log, (B, *phy2log.shape)), 2)
    if d.rule == "even":
        return expert_tokens * even_shares(phy2log)[None]
    if d.rule in ("static", "local"):
        ids = list(range(L)) if layer_ids is None else list(layer_ids)
        return expert_tokens * rank_shares(phy2log, num_gpus, d, ids)[None]
    shares = np.stack([lp_shares(phy2log[i], counts[:, i, :], num_gpus) for i in range(L)], 1)
    return expert_tokens * shares
