"""The fast, strong start for one layer: speed-aware replica counts, speed-aware LPT, then
pairwise-swap local search on the slowest GPU.

Items are replicas; `p[i, g]` is item i's time on GPU g. A plan is `item_gpu[i]`; each GPU takes
exactly S items and never two replicas of one expert.
"""

from __future__ import annotations

import numpy as np

from vibe_plan.placement.cost import TimeCurve


def replica_counts(
    load: np.ndarray, num_slots: int, curves: list[TimeCurve], max_per_expert: int
) -> np.ndarray:
    """Give the spare slots, one at a time, to the expert whose replica is slowest on the mean GPU.
    load [E] -> logcnt [E]."""
    E = len(load)
    logcnt = np.ones(E, dtype=np.int64)
    if num_slots <= E:
        return logcnt
    ts = np.array([c.tokens[-1] for c in curves]).max()
    grid = np.linspace(0.0, max(float(load.max()), ts), 512)
    mean_curve = TimeCurve(grid, np.mean([c(grid) for c in curves], axis=0))
    # Order of ties broken by expert id: the result is deterministic.
    for _ in range(num_slots - E):
        per_replica = mean_curve(load / logcnt)
        per_replica[logcnt >= max_per_expert] = -1.0
        # Below the knee every replica costs the same floor: then the most tokens per replica wins.
        tied = per_replica >= per_replica.max() * (1 - 1e-12)
        logcnt[int(np.argmax(np.where(tied, load / logcnt, -1.0)))] += 1
    return logcnt


def items_of(logcnt: np.ndarray) -> np.ndarray:
    """Logical expert of each item, replicas adjacent: [sum(logcnt)]."""
    return np.repeat(np.arange(len(logcnt)), logcnt)


def lpt(
    p: np.ndarray,
    item_expert: np.ndarray,
    num_gpus: int,
    slots: int,
    item_tokens: np.ndarray | None = None,
) -> np.ndarray:
    """Heaviest item first, each to the GPU where it would finish earliest, keeping enough GPUs
    with free slots for the replicas still to come. Ties (items below the knee all cost the
    weight-streaming floor) are broken by tokens, as a token balancer would, since batches that
    spike past the knee make those tokens count. -> item_gpu [items]."""
    n = len(item_expert)
    tokens = np.zeros(n) if item_tokens is None else item_tokens
    order = np.lexsort((-tokens, -p.mean(axis=1)))
    finish = np.zeros(num_gpus)
    gpu_tokens = np.zeros(num_gpus)
    free = np.full(num_gpus, slots)
    holds: list[set[int]] = [set() for _ in range(num_gpus)]
    item_gpu = np.full(n, -1, dtype=np.int64)
    for k, i in enumerate(order):
        e = int(item_expert[i])
        later = item_expert[order[k + 1 :]]
        need_later = int(np.bincount(later).max()) if len(later) else 0
        cand = [g for g in range(num_gpus) if free[g] > 0 and e not in holds[g]]
        with_room = int((free > 0).sum())
        cand.sort(key=lambda g: (finish[g] + p[i, g], gpu_tokens[g], g))
        pick = next(
            (g for g in cand if free[g] > 1 or with_room - 1 >= need_later),
            max(cand, key=lambda g: (free[g], -g)) if cand else -1,
        )
        if pick < 0:
            raise RuntimeError("LPT ran out of feasible GPUs")  # not reachable: slots >= items
        item_gpu[i] = pick
        finish[pick] += p[i, pick]
        gpu_tokens[pick] += tokens[i]
        free[pick] -= 1
        holds[pick].add(e)
    return item_gpu


def local_search(
    p: np.ndarray,
    item_expert: np.ndarray,
    item_gpu: np.ndarray,
    num_gpus: int,
    doubles: bool = True,
    max_rounds: int = 10_000,
) -> np.ndarray:
    """Swap items of the slowest GPU with items elsewhere, one for one or else two for two, while
    that brings both GPUs below the current maximum. Each move lowers the sorted vector of GPU
    times, so the search ends."""
    item_gpu = item_gpu.copy()
    if num_gpus < 2:
        return item_gpu
    idx = np.arange(len(item_gpu))
    E = int(item_expert.max()) + 1
    for _ in range(max_rounds):
        finish = np.bincount(item_gpu, weights=p[idx, item_gpu], minlength=num_gpus)
        holds = np.zeros((num_gpus, E), dtype=bool)
        holds[item_gpu, item_expert] = True
        move = _best_single_swap(p, item_expert, item_gpu, finish, holds)
        if move is None and doubles:
            move = _best_double_swap(p, item_expert, item_gpu, finish, holds)
        if move is None:
            break
        mine, theirs = move
        g, h = item_gpu[mine[0]], item_gpu[theirs[0]]
        item_gpu[list(mine)], item_gpu[list(theirs)] = h, g
    return item_gpu


def _best_single_swap(p, item_expert, item_gpu, finish, holds):
    g = int(np.argmax(finish))
    top = finish[g]
    mine = np.flatnonzero(item_gpu == g)
    others = np.flatnonzero(item_gpu != g)
    h = item_gpu[others]
    # new_g[a, b]: g after giving item mine[a] for others[b]; new_h likewise.
    new_g = top - p[mine, g][:, None] + p[others, g][None, :]
    new_h = finish[h][None, :] - p[others, h][None, :] + p[mine][:, h]
    ea, eb = item_expert[mine][:, None], item_expert[others][None, :]
    legal = (ea != eb) & ~holds[h[None, :], ea] & ~holds[g][eb]
    worse = np.where(legal, np.maximum(new_g, new_h), np.inf)
    a, b = np.unravel_index(int(np.argmin(worse)), worse.shape)
    if not worse[a, b] < top * (1 - 1e-9):
        return None
    return (mine[a],), (others[b],)


def _best_double_swap(p, item_expert, item_gpu, finish, holds):
    """Best exchange of two items of the slowest GPU for two items of another GPU."""
    G = len(finish)
    S = len(item_gpu) // G
    if S < 2:
        return None
    g = int(np.argmax(finish))
    top = finish[g]
    slot_item = np.argsort(item_gpu, kind="stable").reshape(G, S)
    i, j = np.triu_indices(S, k=1)
    a1, a2 = slot_item[g, i], slot_item[g, j]  # every pair on the slowest GPU
    pa = p[a1] + p[a2]  # [pairs, G]: that pair's time on each GPU
    a_clash = holds[:, item_expert[a1]] | holds[:, item_expert[a2]]  # [G, pairs]
    best, move = top * (1 - 1e-9), None
    for h in range(G):
        if h == g:
            continue
        b1, b2 = slot_item[h, i], slot_item[h, j]
        pb = p[b1] + p[b2]  # [pairs, G]
        new_g = (top - pa[:, g])[:, None] + pb[:, g][None, :]
        new_h = (finish[h] - pb[:, h])[None, :] + pa[:, h][:, None]
        worse = np.maximum(new_g, new_h)
        b_clash = holds[g, item_expert[b1]] | holds[g, item_expert[b2]]
        worse[a_clash[h], :] = np.inf
        worse[:, b_clash] = np.inf
        a, b = np.unravel_index(int(np.argmin(worse)), worse.shape)
        if worse[a, b] < best:
            best, move = worse[a, b], ((a1[a], a2[a]), (b1[b], b2[b]))
    return move


def gpu_finish(p: np.ndarray, item_gpu: np.ndarray, num_gpus: int) -> np.ndarray:
    return np.bincount(item_gpu, weights=p[np.arange(len(item_gpu)), item_gpu], minlength=num_gpus)


def iterated_local_search(
    p: np.ndarray,
    item_expert: np.ndarray,
    item_gpu: np.ndarray,
    num_gpus: int,
    target: float,
    iters: int = 200,
    kick: int = 3,
    seed: int = 0,
) -> np.ndarray:
    """Kick the best plan with a few random legal swaps, descend again, keep the best; stop once the
    makespan reaches `target`. Seeded, so the same inputs give the same plan."""
    rng = np.random.default_rng(seed)
    best = item_gpu
    best_span = gpu_finish(p, best, num_gpus).max()
    for _ in range(iters):
        if best_span <= target:
            break
        trial = local_search(p, item_expert, _kick(rng, item_expert, best, kick), num_gpus)
        span = gpu_finish(p, trial, num_gpus).max()
        if span < best_span:
            best, best_span = trial, span
    return best


def _kick(rng: np.random.Generator, item_expert: np.ndarray, item_gpu: np.ndarray, k: int):
    item_gpu = item_gpu.copy()
    n = len(item_gpu)
    for _ in range(k):
        i, j = rng.integers(n, size=2)
        a, b = item_gpu[i], item_gpu[j]
        if a == b or item_expert[i] == item_expert[j]:
            continue
        if (item_expert[item_gpu == b] == item_expert[i]).any():
            continue
        if (item_expert[item_gpu == a] == item_expert[j]).any():
            continue
        item_gpu[i], item_gpu[j] = b, a
    return item_gpu
