"""DeepSeek's EPLB algorithm (token-balanced, speed-blind), written from its published description.

Hierarchical when expert groups divide evenly over nodes: pack groups onto nodes, replicate hot
experts inside each node, pack replicas onto the node's GPUs. Otherwise the same with 1 group and
1 node. Two replicas of one expert may share a GPU, as in the original.
"""

from __future__ import annotations

import numpy as np

from vibe_plan.artifacts.placement import make_log2phy


def balanced_packing(weight: np.ndarray, num_packs: int) -> tuple[np.ndarray, np.ndarray]:
    """Put n items per row into `num_packs` packs of n / num_packs items, heaviest item first into
    the lightest pack with room. weight [rows, n] -> (pack_index, rank_in_pack), both [rows, n]."""
    rows, num_items = weight.shape
    per_pack = num_items // num_packs
    if per_pack == 1:
        ident = np.tile(np.arange(num_items), (rows, 1))
        return ident, np.zeros_like(ident)
    pack_index = np.full((rows, num_items), -1, dtype=np.int64)
    rank_in_pack = np.full((rows, num_items), -1, dtype=np.int64)
    for i in range(rows):
        pack_weight = [0.0] * num_packs
        pack_items = [0] * num_packs
        for item in np.argsort(-weight[i], kind="stable"):
            pack = min(
                (p for p in range(num_packs) if pack_items[p] < per_pack),
                key=pack_weight.__getitem__,
            )
            pack_index[i, item] = pack
            rank_in_pack[i, item] = pack_items[pack]
            pack_weight[pack] += float(weight[i, item])
            pack_items[pack] += 1
    return pack_index, rank_in_pack


def replicate_experts(
    weight: np.ndarray, num_phy: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add replicas one at a time to the expert with the largest load per replica.
    weight [rows, num_log] -> (phy2log, rank, logcnt)."""
    rows, num_log = weight.shape
    phy2log = np.tile(np.arange(num_phy), (rows, 1))
    rank = np.zeros((rows, num_phy), dtype=np.int64)
    logcnt = np.ones((rows, num_log), dtype=np.int64)
    arange_rows = np.arange(rows)
    for i in range(num_log, num_phy):
        hot = np.argmax(weight / logcnt, axis=-1)
        phy2log[:, i] = hot
        rank[:, i] = logcnt[arange_rows, hot]
        logcnt[arange_rows, hot] += 1
    return phy2log, rank, logcnt


def _inverse(perm: np.ndarray) -> np.ndarray:
    inv = np.empty_like(perm)
    np.put_along_axis(inv, perm, np.tile(np.arange(perm.shape[1]), (perm.shape[0], 1)), axis=1)
    return inv


def rebalance_hierarchical(
    weight: np.ndarray, num_phy: int, num_groups: int, num_nodes: int, num_gpus: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, num_log = weight.shape
    group_size = num_log // num_groups
    groups_per_node = num_groups // num_nodes
    per_gpu = num_phy // num_gpus

    # Step 1: groups onto nodes, balanced by summed load.
    tokens_per_group = weight.reshape(rows, num_groups, group_size).sum(-1)
    group_pack, group_rank = balanced_packing(tokens_per_group, num_nodes)
    log2mlog = (
        ((group_pack * groups_per_node + group_rank) * group_size)[:, :, None]
        + np.arange(group_size)
    ).reshape(rows, num_log)
    mlog2log = _inverse(log2mlog)

    # Step 2: replicas inside each node ("mlog" = node-major logical order).
    tokens_per_mlog = np.take_along_axis(weight, mlog2log, -1).reshape(-1, num_log // num_nodes)
    phy2mlog, phyrank, mlogcnt = replicate_experts(tokens_per_mlog, num_phy // num_nodes)

    # Step 3: replicas onto the node's GPUs.
    tokens_per_phy = np.take_along_axis(tokens_per_mlog / mlogcnt, phy2mlog, -1)
    pack, rank_in_pack = balanced_packing(tokens_per_phy, num_gpus // num_nodes)
    phy2pphy = pack * per_gpu + rank_in_pack
    pphy2phy = _inverse(phy2pphy)

    pphy2mlog = np.take_along_axis(phy2mlog, pphy2phy, -1)
    node_offset = np.arange(0, num_log, num_log // num_nodes).reshape(1, -1, 1)
    pphy2mlog = (pphy2mlog.reshape(rows, num_nodes, -1) + node_offset).reshape(rows, -1)
    pphy2log = np.take_along_axis(mlog2log, pphy2mlog, -1)
    pphyrank = np.take_along_axis(phyrank, pphy2phy, -1).reshape(rows, -1)
    logcnt = np.take_along_axis(mlogcnt.reshape(rows, -1), log2mlog, -1)
    return pphy2log, pphyrank, logcnt


def rebalance_experts(
    weight: np.ndarray, num_replicas: int, num_groups: int, num_nodes: int, num_gpus: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """weight [layers, logical] -> (phy2log [layers, replicas], log2phy [layers, logical,
    maxlogcnt] padded with -1, logcnt [layers, logical])."""
    weight = np.asarray(weight, dtype=np.float64)
    rows, num_log = weight.shape
    if num_groups % num_nodes == 0:
        phy2log, phyrank, logcnt = rebalance_hierarchical(
            weight, num_replicas, num_groups, num_nodes, num_gpus
        )
    else:
        phy2log, phyrank, logcnt = rebalance_hierarchical(weight, num_replicas, 1, 1, num_gpus)
    log2phy = make_log2phy(phy2log, num_log, phyrank)
    return phy2log, log2phy, logcnt
