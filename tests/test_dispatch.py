"""Dispatch rules reproduce the engines' split of an expert's tokens over its replicas."""

from __future__ import annotations

import numpy as np
import pytest

from vibe_plan.cost import TimeCurve, batch_gpu_times
from vibe_plan.cost.dispatch import (
    Dispatch,
    even_shares,
    lp_shares,
    origin_shares,
    rank_choices,
    rank_shares,
    slot_tokens,
)
from vibe_plan.errors import VibeError

# SGLang 0.5.23's own static tables for this map (8 EP ranks on 2 nodes, 2 slots per GPU), one
# row per rank built from that rank's view, as `benchmarks/sglang_dispatch_check.py` computes
# them in an SGLang venv: PICKS[rank][layer][expert] = physical slot.
ROWS = [
    [3, 7, 6, 5, 1, 2, 7, 4, 1, 6, 6, 0, 7, 4, 5, 5],
    [6, 6, 7, 0, 3, 4, 6, 4, 4, 5, 1, 4, 4, 3, 2, 7],
]
PICKS = [
    [[11, 4, 5, 0, 7, 3, 2, 1], [3, 10, 14, 4, 5, 9, 0, 2]],
    [[11, 4, 5, 0, 7, 3, 2, 1], [3, 10, 14, 4, 5, 9, 0, 2]],
    [[11, 4, 5, 0, 7, 3, 2, 1], [3, 10, 14, 4, 5, 9, 1, 2]],
    [[11, 4, 5, 0, 7, 3, 2, 6], [3, 10, 14, 4, 7, 9, 6, 2]],
    [[11, 8, 5, 0, 13, 14, 9, 12], [3, 10, 14, 13, 8, 9, 6, 15]],
    [[11, 8, 5, 0, 13, 14, 10, 12], [3, 10, 14, 13, 11, 9, 1, 15]],
    [[11, 8, 5, 0, 13, 14, 9, 12], [3, 10, 14, 13, 12, 9, 0, 15]],
    [[11, 8, 5, 0, 13, 14, 9, 12], [3, 10, 14, 13, 8, 9, 6, 15]],
]


def test_static_tables_match_sglang():
    rows = np.array(ROWS)
    choices = rank_choices(rows, 8, 2, fair=True)
    for h, row in enumerate(rows):
        for e in range(8):
            slots = np.flatnonzero(row == e)
            ours = choices[h][e] if len(slots) > 1 else np.full(8, slots[0])
            assert ours.tolist() == [PICKS[q][h][e] for q in range(8)], (h, e)


def test_even_shares():
    row = np.array([[0, 1, 2, 0, 1, 0]])
    np.testing.assert_allclose(even_shares(row), [[1 / 3, 1 / 2, 1, 1 / 3, 1 / 2, 1 / 3]])


def _six_gpu_row():
    """6 GPUs on 2 nodes (3 each), 2 slots per GPU. Expert 0 on GPUs 0, 1 (node 0) and 3
    (node 1); expert 1 on GPUs 1 and 4 (one per node); the rest single."""
    return np.array([[0, 2, 0, 1, 3, 4, 0, 5, 1, 6, 7, 8]])


def test_static_hand_computed_shares():
    row = _six_gpu_row()
    w = rank_shares(row, 6, Dispatch("static", num_nodes=2), [0])[0]
    # Expert 0: ranks 0, 1, 3 own a replica; rank 2 takes the first on node 0 (GPU 0); ranks 4
    # and 5 the first on node 1 (GPU 3). Nobody draws.
    np.testing.assert_allclose(w[[0, 2, 6]], [2 / 6, 1 / 6, 3 / 6])
    # Expert 1: one replica per node: each node's three ranks use theirs.
    np.testing.assert_allclose(w[[3, 8]], [0.5, 0.5])
    assert (w[[1, 4, 5, 7, 9, 10, 11]] == 1).all()


def test_static_token_origin_weights():
    row = _six_gpu_row()
    origin = origin_shares("3,1,1,1,2,2", 6, 2)
    w = rank_shares(row, 6, Dispatch("static", num_nodes=2, origin=origin), [0])[0]
    np.testing.assert_allclose(w[[0, 2, 6]], [0.4, 0.1, 0.5])
    per_node = origin_shares("1,3", 6, 2)
    assert per_node == pytest.approx((1 / 12, 1 / 12, 1 / 12, 0.25, 0.25, 0.25))


def test_static_draws_cover_each_rank_once():
    """Single node: ranks without a replica draw; every share is a whole number of ranks."""
    rng = np.random.default_rng(0)
    rows = np.stack([rng.permutation(np.arange(24) % 16) for _ in range(5)])
    w = rank_shares(rows, 8, Dispatch("static"), list(range(5)))
    for row, share in zip(rows, w, strict=True):
        total = np.bincount(row, weights=share, minlength=16)
        np.testing.assert_allclose(total, 1.0)
        ranks = share * 8
        np.testing.assert_allclose(ranks, np.rint(ranks), atol=1e-9)
        assert (ranks >= 1 - 1e-9).all()  # a replica always serves its own rank


def test_local_spreads_the_ranks_without_a_near_replica():
    # 4 GPUs on 2 nodes; expert 0 on GPUs 0 and 1 (both on node 0): node 1's ranks draw evenly.
    row = np.array([[0, 1, 0, 2, 3, 4, 5, 6]])
    w = rank_shares(row, 4, Dispatch("local", num_nodes=2), [0])[0]
    np.testing.assert_allclose(w[[0, 2]], [0.5, 0.5])
    # Under static the same two ranks draw too; each takes one replica.
    ws = rank_shares(row, 4, Dispatch("static", num_nodes=2), [0])[0]
    assert sorted(ws[[0, 2]] * 4) in ([1.0, 3.0], [2.0, 2.0], [3.0, 1.0])


def test_dense_layers_advance_the_draws():
    """SGLang draws over every decoder layer; the trivial rows of dense layers count too."""
    rng = np.random.default_rng(3)
    rows = np.stack([rng.permutation(np.arange(24) % 16) for _ in range(2)])
    alone = rank_shares(rows, 8, Dispatch("static"), [0, 1])
    after_dense = rank_shares(rows, 8, Dispatch("static", num_hidden_layers=5), [3, 4])
    assert not np.allclose(alone, after_dense)


def test_lp_moves_the_shared_expert_to_the_light_gpu():
    # GPU 0 holds experts 0 and 2, GPU 1 holds 1 and 2: the LP sends expert 2 to GPU 1.
    row = np.array([0, 2, 1, 2])
    counts = np.array([[100, 20, 80]])
    w = lp_shares(row, counts, 2)[0]
    assert w[3] > 0.95
    np.testing.assert_allclose(w[1] + w[3], 1.0)
    tok = slot_tokens(row[None], counts[:, None, :], 2, Dispatch("lp"))[0, 0]
    gpu = tok.reshape(2, 2).sum(axis=1)
    assert gpu.max() <= 100 * 1.02


def test_lp_without_replicas_is_the_identity():
    row = np.array([0, 1, 2, 3])
    np.testing.assert_allclose(lp_shares(row, np.array([[5, 6, 7, 8]]), 2), 1.0)


def test_cost_model_uses_the_rule():
    row = _six_gpu_row()
    curves = [TimeCurve.from_points([1, 100, 1000], [1.0, 10.0, 100.0 + g]) for g in range(6)]
    counts = np.array([[[600, 300, 10, 20, 30, 40, 50, 60, 70]]])
    d = Dispatch("static", num_nodes=2)
    t = batch_gpu_times(curves, row, counts, d, [0])[0, 0]
    share = rank_shares(row, 6, d, [0])[0]
    tokens = counts[0, 0][row[0]] * share
    want = [sum(curves[g](tokens[2 * g + k]) for k in range(2)) for g in range(6)]
    np.testing.assert_allclose(t, want)
    assert not np.allclose(t, batch_gpu_times(curves, row, counts)[0, 0])


def test_bad_rule_and_origin_are_user_errors():
    with pytest.raises(VibeError, match="unknown dispatch rule"):
        Dispatch("random")
    with pytest.raises(VibeError, match="one per EP rank"):
        origin_shares("1,2,3", 6, 2)
    with pytest.raises(VibeError, match="non-negative"):
        origin_shares("1,-1", 6, 2)
    with pytest.raises(VibeError, match="weights"):
        origin_shares("a,b", 6, 2)


def test_too_many_draws_fall_back_to_their_expectation(monkeypatch):
    import vibe_plan.cost.dispatch as dispatch

    # Replicas 16 slots apart: never two on one GPU (3 slots each).
    rows = np.stack([np.roll(np.arange(24) % 16, 5 * k) for k in range(4)])
    d = Dispatch("static")
    exact, ok = dispatch.rank_split(rows, 8, d, [0, 1, 2, 3])
    assert ok and dispatch.split_note(rows, 8, d, [0, 1, 2, 3]) == ""
    monkeypatch.setattr(dispatch, "MAX_DRAW_STEPS", 10)
    monkeypatch.setattr(dispatch, "_SPLITS", {})
    w, ok = dispatch.rank_split(rows, 8, d, [0, 1, 2, 3])
    assert not ok and "expectation" in dispatch.split_note(rows, 8, d, [0, 1, 2, 3])
    # On one node every rank either owns a replica or draws: the expectation is n/r.
    np.testing.assert_allclose(w, even_shares(rows))
    assert not np.allclose(exact, w)
