"""`vibe simulate`: a discrete-event serving model over the cost model. Invariants that could fail:
balanced loads on identical GPUs do not depend on the placement, speed scales service time,
a lone request's TTFT is its service time, queueing grows with the rate, seeds reproduce, a
straggler placement shows, and bad input is refused before any work or file."""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import replace

import numpy as np
import pytest
from placement_inputs import gpu_dict, skewed_counts

from vibe_plan.artifacts.gpu_profile import gpu_profile_from_dict
from vibe_plan.artifacts.placement import Placement
from vibe_plan.artifacts.routing_profile import ROUTING_SCHEMA, validate_routing
from vibe_plan.cost import curves_of, slot_gpu_times
from vibe_plan.cost.dispatch import Dispatch, slot_tokens
from vibe_plan.errors import VibeError
from vibe_plan.simulate.engine import run_placement
from vibe_plan.simulate.model import LoadSampler, NonExpertCosts, StepModel
from vibe_plan.simulate.options import SimulateOptions
from vibe_plan.simulate.run import (
    requests_csv,
    simulate,
    summary_csv,
)
from vibe_plan.simulate.workload import TraceRequests, load_trace, poisson_workload

NO_OTHER = {
    "layer_overhead_us": 0.0,
    "attn_us_per_token": 0.0,
    "a2a_us_per_token": 0.0,
    "ctx_us_per_ktoken": 0.0,
}


def fleet(speeds):
    return gpu_profile_from_dict(gpu_dict(list(speeds)))


def routing(counts, num_hidden_layers=None, **meta):
    counts = np.asarray(counts, dtype=np.int64)
    L = counts.shape[1]
    full = {
        "schema": ROUTING_SCHEMA,
        "model": "test",
        "num_experts": int(counts.shape[2]),
        "num_hidden_layers": num_hidden_layers or L + 1,
        "phase": "prefill",
        "source": {"kind": "test"},
        **meta,
    }
    return validate_routing(counts, np.arange(1, L + 1), full)


def placement(rows, num_gpus, num_experts, method="test"):
    rows = np.asarray(rows, dtype=np.int64)
    L, P = rows.shape
    lids = list(range(1, L + 1))
    return Placement(num_gpus, P // num_gpus, num_experts, lids, rows, method=method)


def trace(inp, out):
    return TraceRequests(np.asarray(inp), np.asarray(out), None, "test", ())


def run(gp, rp, placements, tr, **opts):
    return simulate(gp, rp, placements, tr, SimulateOptions(**opts))


# --- invariants of the model -----------------------------------------------------------------


def test_identical_gpus_and_balanced_load_make_every_placement_equal():
    """Every token picks every expert (top-8 of 8): any placement carries the same load per GPU."""
    gp = fleet([1.0] * 4)
    rp = routing(np.ones((6, 3, 8)), row_tokens=[1] * 6, top_k=8)
    layouts = {
        "linear": np.tile(np.arange(8), (3, 1)),
        "interleaved": np.tile([0, 4, 1, 5, 2, 6, 3, 7], (3, 1)),
        "shuffled": np.stack([np.random.default_rng(s).permutation(8) for s in range(3)]),
    }
    pls = [(name, placement(rows, 4, 8)) for name, rows in layouts.items()]
    rng = np.random.default_rng(1)
    tr = trace(rng.integers(20, 400, 60), rng.integers(1, 40, 60))
    res = run(gp, rp, pls, tr, rates=(5.0, 500.0))
    by_rate: dict[float, list] = {}
    for r in res.runs:
        by_rate.setdefault(r.rate, []).append(r)
    for runs in by_rate.values():
        for r in runs[1:]:
            np.testing.assert_array_equal(r.detail.ttft_s, runs[0].detail.ttft_s)
            np.testing.assert_array_equal(r.detail.finish_s, runs[0].detail.finish_s)
            assert r.imbalance == pytest.approx(1.0)
    # ...and the load is real: the high rate queues
    assert by_rate[500.0][0].ttft_p90_s > by_rate[5.0][0].ttft_p90_s


def _skewed():
    rp = routing(skewed_counts(8, 3, 16, tokens=2048, sigma=1.0), top_k=2)
    pl = placement(np.tile(np.arange(16), (3, 1)), 4, 16)
    rng = np.random.default_rng(2)
    tr = trace(rng.integers(50, 1500, 40), rng.integers(2, 60, 40))
    return rp, pl, tr


def test_a_uniformly_slower_fleet_serves_ten_percent_slower():
    rp, pl, tr = _skewed()
    speeds = [1.0, 1.1, 1.2, 1.3]
    fast = fleet(speeds)
    slow = fleet([s * 1.1 for s in speeds])
    low = (0.01,)  # requests never overlap: every time is service time
    a = run(fast, rp, [("p", pl)], tr, rates=low, **NO_OTHER).runs[0].detail
    b = run(slow, rp, [("p", pl)], tr, rates=low, **NO_OTHER).runs[0].detail
    np.testing.assert_allclose(b.ttft_s / a.ttft_s, 1.1, rtol=1e-4)
    more = np.isfinite(a.tpot_s)
    np.testing.assert_allclose(b.tpot_s[more] / a.tpot_s[more], 1.1, rtol=1e-4)
    # With non-expert work the non-expert part is the fleet average's (options, unchanged): the
    # service time grows by 10% of the experts' share, not more.
    a = run(fast, rp, [("p", pl)], tr, rates=low).runs[0]
    b = run(slow, rp, [("p", pl)], tr, rates=low).runs[0]
    ratio = b.detail.ttft_s / a.detail.ttft_s
    assert (ratio > 1.0).all() and (ratio < 1.1 + 1e-9).all()
    assert np.median(ratio) == pytest.approx(1 + 0.1 * a.expert_share, abs=0.02)


def test_at_a_low_rate_ttft_is_the_service_time_of_a_lone_request():
    """A prompt of exactly one row's tokens gets that row's loads; its TTFT is one iteration:
    per MoE layer the slowest GPU's expert time plus its non-expert work, plus the dense layers."""
    speeds = [1.0, 1.3, 1.15, 1.45]
    gp = fleet(speeds)
    counts = skewed_counts(1, 3, 16, tokens=128, seed=3)  # 64 tokens x top-2
    rp = routing(counts, num_hidden_layers=5, row_tokens=[64], top_k=2)
    pl = placement(np.stack([np.random.default_rng(s).permutation(16) for s in range(3)]), 4, 16)
    opts = {
        "layer_overhead_us": 7.0,
        "attn_us_per_token": 0.3,
        "a2a_us_per_token": 0.2,
        "ctx_us_per_ktoken": 0.5,
    }
    res = run(gp, rp, [("p", pl)], trace([64] * 5, [1] * 5), rates=(0.01,), **opts)
    # By hand: the cost model as evaluate uses it, the non-expert model of docs/simulate.md.
    curves = curves_of(gp)
    expert = slot_gpu_times(curves, slot_tokens(pl.phy2log, counts, 4, Dispatch(), [1, 2, 3]))[0]
    mid = math.sqrt(1 * 2048)
    t_mid = np.array([float(c(mid)) for c in curves])
    speed = t_mid / t_mid.mean()
    ctx = 64 * 65 / 2
    per_gpu = 7.0 + 0.3 * 64 / 4 + 0.5 * ctx / 4 / 1000
    moe = (expert + speed * (per_gpu + 0.2 * 64 / 4)).max(axis=1).sum()
    dense = 2 * (speed * per_gpu).max()
    np.testing.assert_allclose(res.runs[0].detail.ttft_s, (moe + dense) * 1e-6, rtol=1e-9)


def test_latency_grows_with_the_rate():
    rp, pl, tr = _skewed()
    gp = fleet([1.0, 1.1, 1.2, 1.3])
    rates = (20.0, 100.0, 500.0, 2500.0)
    res = run(gp, rp, [("p", pl)], tr, rates=rates)
    p50 = [r.ttft_p50_s for r in res.runs]
    p90 = [r.ttft_p90_s for r in res.runs]
    tpot = [r.tpot_p50_s for r in res.runs]
    assert p50 == sorted(p50) and p90 == sorted(p90) and tpot == sorted(tpot)
    assert p90[-1] > 3 * p90[0]
    served = [r.throughput_rps for r in res.runs]
    assert served[1] > served[0]
    assert served[-1] < rates[-1]  # saturated: the server cannot keep up


def test_a_seed_reproduces_the_result_and_another_seed_changes_it():
    rp, pl, tr = _skewed()
    gp = fleet([1.0, 1.1, 1.2, 1.3])
    a, b, c = (run(gp, rp, [("p", pl)], tr, rates=(50.0, 400.0), seed=s) for s in (7, 7, 8))
    assert summary_csv(a.runs) == summary_csv(b.runs)
    assert requests_csv(a.runs) == requests_csv(b.runs)
    assert requests_csv(a.runs) != requests_csv(c.runs)


def test_a_straggler_placement_shows():
    """Four heavy experts on GPU 0 against one heavy expert per GPU, on identical GPUs."""
    gp = fleet([1.0] * 4)
    row = np.array([400] * 4 + [40] * 12)
    rp = routing(np.tile(row, (4, 3, 1)), row_tokens=[1000] * 4, top_k=2)
    piled = np.tile(np.arange(16), (3, 1))
    spread = np.tile([0, 4, 5, 6, 1, 7, 8, 9, 2, 10, 11, 12, 3, 13, 14, 15], (3, 1))
    pls = [("piled", placement(piled, 4, 16)), ("spread", placement(spread, 4, 16))]
    tr = trace([1000] * 30, [8] * 30)
    res = run(gp, rp, pls, tr, rates=(1.0, 200.0), **NO_OTHER)
    for piled_run, spread_run in zip(res.runs[:2], res.runs[2:], strict=True):
        assert piled_run.ttft_p50_s > 1.5 * spread_run.ttft_p50_s
        assert piled_run.throughput_tps <= spread_run.throughput_tps
        assert piled_run.imbalance > spread_run.imbalance
    # with non-expert work on top the gap narrows but stays
    res = run(gp, rp, pls, tr, rates=(1.0,))
    assert res.runs[0].ttft_p50_s > 1.05 * res.runs[1].ttft_p50_s


def test_stretches_of_decode_iterations_give_the_one_at_a_time_result():
    rp, pl, tr = _skewed()
    gp = fleet([1.0, 1.1, 1.2, 1.3])
    workloads = [poisson_workload(tr, r, 0) for r in (5.0, 300.0)]
    results = []
    for ff in (True, False):
        sampler = LoadSampler(rp, 8, 0)
        model = StepModel(gp, rp, pl, Dispatch(), NonExpertCosts(5, 0.1, 0.1, 0.1), sampler)
        results.append(run_placement(model, sampler, workloads, 512, 16, 0, fast_forward=ff))
    for a, b in zip(*results, strict=True):
        assert a.iterations == b.iterations
        np.testing.assert_array_equal(a.ttft_s, b.ttft_s)
        np.testing.assert_array_equal(a.finish_s, b.finish_s)


def test_prefill_and_decode_tokens_draw_from_their_own_rows():
    counts = np.zeros((4, 2, 6), dtype=np.int64)
    counts[:2, :, 0] = 64  # prefill rows route to expert 0
    counts[2:, :, 5] = 4  # decode rows to expert 5
    rp = routing(
        counts,
        phase="mixed",
        row_phase=["prefill", "prefill", "decode", "decode"],
        row_tokens=[64, 64, 4, 4],
        top_k=1,
    )
    s = LoadSampler(rp, 4, 0)
    assert s.split
    rng = np.random.default_rng(0)
    load = s.load(s.key(rng.random(2), 100, 10))
    np.testing.assert_array_equal(load[:, 0], [100, 100])
    np.testing.assert_array_equal(load[:, 5], [10, 10])
    assert load.sum() == 220


def test_chunked_prefill_respects_the_budget_and_decode_goes_first():
    rp, pl, _ = _skewed()
    gp = fleet([1.0] * 4)
    w = poisson_workload(trace([5000, 10], [3, 3]), 1e6, 0)  # both arrive at once
    sampler = LoadSampler(rp, 4, 0)
    model = StepModel(gp, rp, pl, Dispatch(), NonExpertCosts(0, 0, 0, 0), sampler)
    from vibe_plan.simulate.engine import Server

    s = Server(w, 2048, 8, fast_forward=False)
    seen = []
    while (b := s.form()) is not None:
        seen.append((b.n_decode, b.n_prefill))
        expert, _ = model.expert_times([sampler.key(np.zeros(2), b.n_prefill, b.n_decode)])[0]
        times, _ = model.steps(expert[None], b.n_prefill + b.n_decode, np.array([b.ctx_keys]))
        s.complete(b, times)
    # 5000 prompt tokens in chunks of 2048; the short prompt waits its turn (FIFO), then decodes.
    assert seen[:3] == [(0, 2048), (0, 2048), (0, 904 + 10)]
    assert seen[3] == (2, 0)
    assert all(d + p <= 2048 for d, p in seen)
    assert np.isfinite(s.finish_s).all()


# --- traces ---------------------------------------------------------------------------------------


def test_trace_times_are_read_where_the_trace_records_them(tmp_path):
    azure = tmp_path / "azure.csv"
    azure.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,100,10\n"
        "2023-11-16 18:15:47.1805900,0,5\n"  # no prompt: skipped by the reader
        "2023-11-16 18:15:48.9305900,300,1\n"
    )
    t = load_trace(azure)
    np.testing.assert_allclose(t.times_s - t.times_s[0], [0.0, 2.25])
    np.testing.assert_array_equal(t.input_len, [100, 300])
    moon = tmp_path / "m.jsonl"
    moon.write_text(
        "\n".join(
            json.dumps({"timestamp": ms, "input_length": 50, "output_length": 5})
            for ms in (0, 250, 1000)
        )
    )
    np.testing.assert_allclose(load_trace(moon).times_s, [0.0, 0.25, 1.0])
    packed = tmp_path / "m.jsonl.gz"
    packed.write_bytes(gzip.compress(moon.read_bytes()))
    np.testing.assert_allclose(load_trace(packed).times_s, [0.0, 0.25, 1.0])
    text = tmp_path / "t.jsonl"
    text.write_text(json.dumps({"prompt": "x" * 400}) + "\n")
    t = load_trace(text, default_output_len=7)
    assert t.times_s is None and t.input_len.tolist() == [100] and t.output_len.tolist() == [7]
    assert any("len(text)/4" in n for n in t.notes)


def test_failed_burstgpt_requests_are_dropped_with_a_note(tmp_path):
    trace = tmp_path / "burst.csv"
    trace.write_text(
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "0,ChatGPT,100,20,120,Conversation log\n"
        "1,GPT-4,210,0,210,Conversation log\n"
        "2,ChatGPT,50,10,60,Conversation log\n"
    )
    t = load_trace(trace)
    assert t.input_len.tolist() == [100, 50]
    np.testing.assert_allclose(t.times_s, [0.0, 2.0])
    assert any("skipped 1 failed request" in n for n in t.notes)


def test_a_trace_without_times_needs_a_rate():
    rp, pl, tr = _skewed()
    with pytest.raises(VibeError, match="--rate"):
        run(fleet([1.0] * 4), rp, [("p", pl)], tr)


def test_duration_cycles_the_trace_and_cuts_arrivals():
    tr = trace([10, 20, 30], [1, 2, 3])
    w = poisson_workload(tr, 100.0, 0, duration_s=1.0)
    assert 60 < w.num_requests < 140 and w.arrival_s.max() < 1.0
    assert w.input_len[:6].tolist() == [10, 20, 30, 10, 20, 30]
    longer = poisson_workload(tr, 100.0, 0, duration_s=2.0)
    np.testing.assert_array_equal(longer.arrival_s[: w.num_requests], w.arrival_s)


def test_options_are_checked_in_the_library_too():
    rp, pl, tr = _skewed()
    gp = fleet([1.0] * 4)
    base = SimulateOptions(rates=(1.0,))
    for bad in (
        replace(base, rates=(math.nan,)),
        replace(base, slo_ttft_s=-1.0),
        replace(base, max_running=0),
        replace(base, seed=-1),
        replace(base, load_draws=0),
    ):
        with pytest.raises(VibeError):
            simulate(gp, rp, [("p", pl)], tr, bad)
    with pytest.raises(VibeError, match="GPUs"):
        simulate(fleet([1.0] * 8), rp, [("p", pl)], tr, base)
