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

    @property
    def per_batch(self) -> bool:
        return self.rule == "lp"


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
    rows: np.ndarray, num_gpus: int, num_nodes: int, fair: bool, seed: int = STATIC_SEED
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
    of different ranks are therefore not balanced per replica, only in expectation."""
    rngs = [random.Random(seed) for _ in range(num_gpus)] if fair else []
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
            if fair and len(rest):
                cand = [int(s) for s in slots]
                whole, extra = divmod(len(rest), len(cand))
                for pos, q in enumerate(rest):
                    rng = rngs[q]
                    drawn = cand * whole + rng.sample(cand, k=extra)
                    rng.shuffle(drawn)
                    pick[q] = drawn[pos]
            layer[int(e)] = pick
        out.append(layer)
    return out


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
    rows, ids = decoder_map(phy2log, layer_ids, d.num_hidden_layers)
    choices = rank_choices(rows, num_gpus, d.num_nodes, fair=d.rule == "static")
    origin = np.full(num_gpus, 1.0 / num_gpus) if d.origin is None else np.asarray(d.origin)
    w = np.ones(phy2log.shape, dtype=float)
    for i, h in enumerate(ids):
        row = phy2log[i]
        for e, pick in choices[h].items():
            slots = np.flatnonzero(row == e)
            share = np.zeros(len(row))
            np.add.at(share, pick[pick >= 0], origin[pick >= 0])
            share[slots] += origin[pick < 0].sum() / len(slots)  # `local`: an even draw
            w[i, slots] = share[slots]
    return w


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
