"""The fast, strong start for one layer: speed-aware replica counts, speed-aware LPT, then
pairwise-swap local search on the slowest GPU.

Items are replicas; `p[i, g]` is item i's time on GPU g. A plan is `item_gpu[i]`; each GPU takes
exactly S items, and no domain (a GPU by default, or a node: `node_of[g]`) holds two replicas of
one expert.
"""

from __future__ import annotations

import numpy as np

from vibe_plan.cost import TimeCurve

LOOP_MAX_GPUS = 16  # double swaps loop over partners up to this many GPUs, else one block
DOUBLES_MAX_SLOTS = 20  # ILS descents exchange pairs only up to this many slots per GPU


def replica_counts(
    load: np.ndarray, num_slots: int, curves: list[TimeCurve], max_per_expert: int
) -> np.ndarray:
    """Give the spare slots, one at a time, to the expert whose replica is slowest on the mean GPU.
    load [E] -> logcnt [E]."""
    E = len(load)
    if num_slots > E * max_per_expert:
        raise ValueError(f"{num_slots} slots exceed {E} experts x {max_per_expert} replicas each")
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


def domains_of(node_of: np.ndarray | None, num_gpus: int) -> np.ndarray:
    """Dense domain label of each GPU: [G]. None: each GPU is its own domain (the GPU rule)."""
    if node_of is None:
        return np.arange(num_gpus)
    return np.unique(np.asarray(node_of), return_inverse=True)[1].reshape(-1)


def lpt(
    p: np.ndarray,
    item_expert: np.ndarray,
    num_gpus: int,
    slots: int,
    item_tokens: np.ndarray | None = None,
    node_of: np.ndarray | None = None,
) -> np.ndarray:
    """Heaviest item first, each to the GPU where it would finish earliest, keeping enough domains
    with free slots for the replicas still to come (a domain never holds two replicas of one
    expert; by default each GPU is its own domain). Ties (items below the knee all cost the
    weight-streaming floor) are broken by tokens, as a token balancer would, since batches that
    spike past the knee make those tokens count. -> item_gpu [items]."""
    dom = domains_of(node_of, num_gpus)
    tokens = np.zeros(len(item_expert)) if item_tokens is None else item_tokens
    order = np.lexsort((-tokens, -p.mean(axis=1)))
    # The look-ahead is a cheap rule that almost always suffices; where it leads into a dead end,
    # the second pass checks every pick exactly (the plan is the same wherever the first succeeds).
    for exact in (False, True):
        item_gpu = _lpt_pass(p, item_expert, dom, slots, tokens, order, exact)
        if item_gpu is not None:
            return item_gpu
    raise ValueError("no placement keeps every domain free of duplicate experts")


def _lpt_pass(p, item_expert, dom, slots, tokens, order, exact):
    G = len(dom)
    E = int(item_expert.max()) + 1
    finish = np.zeros(G)
    gpu_tokens = np.zeros(G)
    free = np.full(G, slots)
    dom_free = np.bincount(dom) * slots
    held = np.zeros((len(dom_free), E), dtype=bool)  # expert already in domain
    remaining = np.bincount(item_expert, minlength=E)
    item_gpu = np.full(len(item_expert), -1, dtype=np.int64)
    for i in order:
        e = int(item_expert[i])
        remaining[e] -= 1
        need_later = int(remaining.max())
        legal = (free > 0) & ~held[dom, e]
        if not legal.any():
            return None
        key = finish + p[i]
        if exact:
            pick = _first_that_fits(legal, key, gpu_tokens, dom, dom_free, held, e, remaining)
            if pick < 0:
                return None
        else:
            rooms = int((dom_free > 0).sum())
            ok = legal & ((dom_free[dom] > 1) | (rooms - 1 >= need_later))
            # No pick keeps enough room: take the legal GPU with most free slots.
            pick = _earliest(ok, key, gpu_tokens) if ok.any() else _roomiest(legal, free)
        item_gpu[i] = pick
        finish[pick] += p[i, pick]
        gpu_tokens[pick] += tokens[i]
        free[pick] -= 1
        dom_free[dom[pick]] -= 1
        held[dom[pick], e] = True
    return item_gpu


def _earliest(mask: np.ndarray, key: np.ndarray, gpu_tokens: np.ndarray) -> int:
    """First GPU of `mask` in the order (key, tokens, GPU id)."""
    v = np.where(mask, key, np.inf)
    tie = mask & (v == v.min())
    return int(np.argmin(np.where(tie, gpu_tokens, np.inf)))


def _roomiest(mask: np.ndarray, free: np.ndarray) -> int:
    return int(np.argmax(np.where(mask, free, -1)))


def _first_that_fits(legal, key, gpu_tokens, dom, dom_free, held, e, remaining) -> int:
    """First legal GPU in the order (key, tokens, id) whose domain leaves a feasible rest."""
    cand = np.flatnonzero(legal)
    verdict: dict[int, bool] = {}
    for g in cand[np.lexsort((cand, gpu_tokens[cand], key[cand]))]:
        d = int(dom[g])
        if d not in verdict:
            cap = dom_free.copy()
            cap[d] -= 1
            was = held[d, e]
            held[d, e] = True
            verdict[d] = rest_fits(cap, held[:, e], e, remaining)
            held[d, e] = was
        if verdict[d]:
            return int(g)
    return -1


def rest_fits(cap: np.ndarray, e_in: np.ndarray, e: int, remaining: np.ndarray) -> bool:
    """Can the items still to place fill the domains' free slots `cap`, never two replicas of one
    expert in a domain? `remaining[e]` replicas of expert e may use only domains without e
    (`e_in`); every other expert with replicas left has none placed (LPT places replicas one after
    another). Exact: e takes the roomiest allowed domains, then the Gale-Ryser condition."""
    cap = cap.copy()
    m = int(remaining[e])
    if m:
        allowed = np.flatnonzero((cap > 0) & ~e_in)
        if len(allowed) < m:
            return False
        cap[allowed[np.argsort(-cap[allowed], kind="stable")[:m]]] -= 1
    b = np.delete(remaining, e)
    b = b[b > 0]
    a = -np.sort(-cap[cap > 0])
    if not len(a):
        return not len(b)
    K = len(a)
    at_least = np.bincount(np.minimum(b, K), minlength=K + 1)[::-1].cumsum()[::-1]  # #(b >= t)
    return bool(np.all(np.cumsum(a) <= np.cumsum(at_least[1 : K + 1])))


def local_search(
    p: np.ndarray,
    item_expert: np.ndarray,
    item_gpu: np.ndarray,
    num_gpus: int,
    doubles: bool = True,
    max_rounds: int = 10_000,
    node_of: np.ndarray | None = None,
    frozen: np.ndarray | None = None,
) -> np.ndarray:
    """Swap items of the slowest GPU with items elsewhere, one for one or else two for two, while
    that brings both GPUs below the current maximum. Each move lowers the sorted vector of GPU
    times, so the search ends. Swaps inside a domain are always legal; across domains the moved
    experts must not be in the target domain already. `frozen` items never move."""
    item_gpu = item_gpu.copy()
    if num_gpus < 2:
        return item_gpu
    dom = domains_of(node_of, num_gpus)
    idx = np.arange(len(item_gpu))
    E = int(item_expert.max()) + 1
    fixed = np.zeros(len(item_gpu), dtype=bool) if frozen is None else np.asarray(frozen)
    for _ in range(max_rounds):
        finish = np.bincount(item_gpu, weights=p[idx, item_gpu], minlength=num_gpus)
        holds = np.zeros((int(dom.max()) + 1, E), dtype=bool)
        holds[dom[item_gpu], item_expert] = True
        move = _best_single_swap(p, item_expert, item_gpu, finish, holds, dom, fixed)
        if move is None and doubles:
            move = _best_double_swap(p, item_expert, item_gpu, finish, holds, dom, fixed)
        if move is None:
            break
        mine, theirs = move
        g, h = item_gpu[mine[0]], item_gpu[theirs[0]]
        item_gpu[list(mine)], item_gpu[list(theirs)] = h, g
    return item_gpu


def _best_single_swap(p, item_expert, item_gpu, finish, holds, dom, fixed):
    mine, others, new_g, new_h, legal = single_swaps(
        p, item_expert, item_gpu, finish, holds, dom, fixed
    )
    worse = np.where(legal, np.maximum(new_g, new_h), np.inf)
    a, b = np.unravel_index(int(np.argmin(worse)), worse.shape)
    if not worse[a, b] < finish.max() * (1 - 1e-9):
        return None
    return (mine[a],), (others[b],)


def single_swaps(p, item_expert, item_gpu, finish, holds, dom, fixed):
    """Every exchange of one item of the slowest GPU g for one item elsewhere: (mine, others,
    new_g, new_h, legal), new_g[a, b] being g's time after giving mine[a] for others[b] and
    new_h the partner's."""
    g = int(np.argmax(finish))
    mine = np.flatnonzero(item_gpu == g)
    others = np.flatnonzero(item_gpu != g)
    h = item_gpu[others]
    new_g = finish[g] - p[mine, g][:, None] + p[others, g][None, :]
    new_h = finish[h][None, :] - p[others, h][None, :] + p[mine][:, h]
    ea, eb = item_expert[mine][:, None], item_expert[others][None, :]
    dh = dom[h]
    legal = (ea != eb) & ((dh == dom[g])[None, :] | (~holds[dh[None, :], ea] & ~holds[dom[g]][eb]))
    legal &= ~fixed[mine][:, None] & ~fixed[others][None, :]
    return mine, others, new_g, new_h, legal


def _best_double_swap(p, item_expert, item_gpu, finish, holds, dom, fixed):
    """Best exchange of two items of the slowest GPU for two items of another GPU. Ties go to the
    lowest partner GPU, then the first pairs. One partner at a time: a [pairs, pairs] block per
    partner stays in cache, where one [G, pairs, pairs] block would not."""
    G = len(finish)
    S = len(item_gpu) // G
    if S < 2:
        return None
    if G > LOOP_MAX_GPUS:
        return _double_swap_all_partners(p, item_expert, item_gpu, finish, holds, dom, fixed)
    g = int(np.argmax(finish))
    top = finish[g]
    slot_item = np.argsort(item_gpu, kind="stable").reshape(G, S)
    i, j = np.triu_indices(S, k=1)
    a1, a2 = slot_item[g, i], slot_item[g, j]  # every pair on the slowest GPU
    pa = p[a1] + p[a2]  # [pairs, G]: that pair's time on each GPU
    a_clash = holds[:, item_expert[a1]] | holds[:, item_expert[a2]]  # [domains, pairs]
    a_fixed = fixed[a1] | fixed[a2]
    best, move = top * (1 - 1e-9), None
    for h in range(G):
        if h == g:
            continue
        b1, b2 = slot_item[h, i], slot_item[h, j]
        new_g = (top - pa[:, g])[:, None] + (p[b1, g] + p[b2, g])[None, :]
        new_h = (finish[h] - p[b1, h] - p[b2, h])[None, :] + pa[:, h][:, None]
        worse = np.maximum(new_g, new_h)
        bad_a, bad_b = a_fixed.copy(), fixed[b1] | fixed[b2]
        if dom[h] != dom[g]:
            bad_a |= a_clash[dom[h]]
            bad_b |= holds[dom[g], item_expert[b1]] | holds[dom[g], item_expert[b2]]
        worse[bad_a, :] = np.inf
        worse[:, bad_b] = np.inf
        a, b = np.unravel_index(int(np.argmin(worse)), worse.shape)
        if worse[a, b] < best:
            best, move = worse[a, b], ((a1[a], a2[a]), (b1[b], b2[b]))
    return move


def _double_swap_all_partners(p, item_expert, item_gpu, finish, holds, dom, fixed):
    """`_best_double_swap` over every partner GPU at once: one [G, pairs, pairs] block, cheaper
    than a Python loop over many partners, dearer over a few."""
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
    b1, b2 = slot_item[:, i], slot_item[:, j]  # [G, pairs]: every pair on every GPU
    gpus = np.arange(G)[:, None]
    pb_g = p[b1, g] + p[b2, g]  # [G, pairs]: GPU h's pair on g
    pb_h = p[b1, gpus] + p[b2, gpus]  # [G, pairs]: on its own GPU
    new_g = (top - pa[:, g])[None, :, None] + pb_g[:, None, :]  # [h, a, b]
    new_h = (finish[:, None] - pb_h)[:, None, :] + pa.T[:, :, None]
    across = (dom != dom[g])[:, None]
    a_clash = (holds[:, item_expert[a1]] | holds[:, item_expert[a2]])[dom] & across  # [h, a]
    b_clash = (holds[dom[g], item_expert[b1]] | holds[dom[g], item_expert[b2]]) & across
    a_clash |= (fixed[a1] | fixed[a2])[None, :]
    b_clash |= fixed[b1] | fixed[b2]
    # Clashes as +inf penalties: broadcasting is far cheaper than a 3-D boolean mask.
    worse = np.maximum(new_g, new_h)
    worse += np.where(a_clash, np.inf, 0.0)[:, :, None]
    worse += np.where(b_clash, np.inf, 0.0)[:, None, :]
    worse[g] = np.inf
    h, a, b = np.unravel_index(int(np.argmin(worse)), worse.shape)
    if not worse[h, a, b] < top * (1 - 1e-9):
        return None
    return (a1[a], a2[a]), (b1[h, b], b2[h, b])


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
    node_of: np.ndarray | None = None,
) -> np.ndarray:
    """Kick the best plan with a few random legal swaps, descend again, keep the best; stop once the
    makespan reaches `target`. Seeded, so the same inputs give the same plan."""
    rng = np.random.default_rng(seed)
    dom = domains_of(node_of, num_gpus)
    # With many slots per GPU, single swaps are fine-grained enough, and the S^2/2 x S^2/2 pair
    # exchanges would cost tens of ms per descent step.
    doubles = len(item_gpu) // num_gpus <= DOUBLES_MAX_SLOTS
    best = item_gpu
    best_span = gpu_finish(p, best, num_gpus).max()
    for _ in range(iters):
        if best_span <= target:
            break
        kicked = _kick(rng, item_expert, best, kick, dom)
        trial = local_search(p, item_expert, kicked, num_gpus, doubles, node_of=node_of)
        span = gpu_finish(p, trial, num_gpus).max()
        if span < best_span:
            best, best_span = trial, span
    return best


def _kick(rng: np.random.Generator, item_expert, item_gpu, k: int, dom: np.ndarray):
    item_gpu = item_gpu.copy()
    n = len(item_gpu)
    for _ in range(k):
        i, j = rng.integers(n, size=2)
        a, b = item_gpu[i], item_gpu[j]
        if a == b or item_expert[i] == item_expert[j]:
            continue
        if dom[a] != dom[b]:
            item_dom = dom[item_gpu]
            if (item_expert[item_dom == dom[b]] == item_expert[i]).any():
                continue
            if (item_expert[item_dom == dom[a]] == item_expert[j]).any():
                continue
        item_gpu[i], item_gpu[j] = b, a
    return item_gpu
