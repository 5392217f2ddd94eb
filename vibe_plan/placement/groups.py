"""Expert groups onto nodes for group-limited routers (DeepSeek-V3's n_group): a token's experts
then stay within few nodes, so balance is never bought with cross-node traffic the cost model
cannot see."""

from __future__ import annotations

import numpy as np

from vibe_plan.cost import TimeCurve


def node_speed(curves: list[TimeCurve], num_nodes: int, at_tokens: float) -> np.ndarray:
    """Relative throughput of each node: sum over its GPUs of 1 / time at a typical load."""
    inv = np.array([1.0 / max(float(c(at_tokens)), 1e-12) for c in curves])
    return inv.reshape(num_nodes, -1).sum(axis=1)


def groups_to_nodes(
    load: np.ndarray, curves: list[TimeCurve], num_groups: int, num_nodes: int
) -> list[list[int]]:
    """LPT of group loads onto nodes weighted by node speed, K/N groups each, then pairwise swaps
    while they lower the slowest node's load / speed."""
    per_node = num_groups // num_nodes
    weight = load.reshape(num_groups, -1).sum(axis=1)
    speed = node_speed(curves, num_nodes, float(load.mean()))
    node_of = np.full(num_groups, -1)
    total = np.zeros(num_nodes)
    for k in np.argsort(-weight, kind="stable"):
        room = [n for n in range(num_nodes) if (node_of == n).sum() < per_node]
        n = min(room, key=lambda n: ((total[n] + weight[k]) / speed[n], n))
        node_of[k] = n
        total[n] += weight[k]
    improved = True
    while improved:
        improved = False
        t = total / speed
        a = int(np.argmax(t))
        best = (t[a], -1, -1)
        for i in np.flatnonzero(node_of == a):
            for j in np.flatnonzero(node_of != a):
                b = node_of[j]
                na = (total[a] - weight[i] + weight[j]) / speed[a]
                nb = (total[b] - weight[j] + weight[i]) / speed[b]
                if max(na, nb) < best[0] * (1 - 1e-12):
                    best = (max(na, nb), int(i), int(j))
        if best[1] >= 0:
            gi, gj = best[1], best[2]
            b = node_of[gj]
            total[a] += weight[gj] - weight[gi]
            total[b] += weight[gi] - weight[gj]
            node_of[gi], node_of[gj] = b, a
            improved = True
    return [sorted(np.flatnonzero(node_of == n).tolist()) for n in range(num_nodes)]
