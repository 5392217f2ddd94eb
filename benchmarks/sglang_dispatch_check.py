"""Checks vibe's `static`, `local` and `lp` dispatch models against SGLang's own code.

Runs in a CPU-only SGLang venv (SGLang 0.5.23 installed with --no-deps, CPU torch), never in
`make test`. For placements of several shapes (vibe plans with and without group locality, eplb
plans, random maps, the trivial dense-layer rows), it builds each EP rank's static table with
SGLang's `compute_logical_to_rank_dispatch_physical_map` from that rank's own view
(`_compute_logical_to_all_physical_map` with an a2a backend), and compares every pick with
`vibe_plan.cost.dispatch.rank_choices`; then the per-replica shares of `local`; then the `lp`
split against SGLang's LPLBSolver matrices and its pure-torch IPM reference.

Usage: PYTHONPATH=. SGLANG_VENV/bin/python benchmarks/sglang_dispatch_check.py
"""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import numpy as np
import torch

from vibe_plan.cost.dispatch import Dispatch, lp_shares, rank_choices, rank_shares

CTX = SimpleNamespace(
    moe=SimpleNamespace(
        ep_join_mode="none", moe_a2a_backend="deepep", ep_dispatch_algorithm="static"
    ),
    parallel=SimpleNamespace(ep_size=1, nnodes=1),
)


def _stub_sglang() -> types.ModuleType:
    """The server context SGLang's expert-location code reads, set per case."""
    import sglang.srt.eplb.expert_location as el

    el.get_exec = lambda: SimpleNamespace(moe=CTX.moe)
    el.get_parallel = lambda: CTX.parallel
    elastic = types.ModuleType("sglang.srt.elastic_ep.elastic_ep")
    elastic.elastic_expanded_world_enabled = lambda: False
    sys.modules["sglang.srt.elastic_ep.elastic_ep"] = elastic
    return el


def sglang_picks(el, rows: np.ndarray, G: int, N: int) -> np.ndarray:
    """[G ranks, H layers, E experts] physical slot each rank dispatches to, by SGLang."""
    CTX.parallel = SimpleNamespace(ep_size=G, nnodes=N)
    H, P = rows.shape
    E = int(rows.max()) + 1
    p2l = torch.tensor(rows)
    out = []
    for q in range(G):
        view = el._compute_logical_to_all_physical_map(p2l, E, G, moe_ep_rank=q)
        table = el.compute_logical_to_rank_dispatch_physical_map(view, G, P, ep_rank=q)
        out.append(table.numpy())
    return np.stack(out)


def vibe_picks(rows: np.ndarray, G: int, N: int) -> np.ndarray:
    H, P = rows.shape
    E = int(rows.max()) + 1
    choices = rank_choices(rows, G, N, fair=True)
    out = np.empty((G, H, E), dtype=np.int64)
    for h, row in enumerate(rows):
        first = np.full(E, -1)
        for s in range(P - 1, -1, -1):
            first[row[s]] = s
        out[:, h, :] = first[None, :]
        for e, pick in choices[h].items():
            out[:, h, e] = pick
    return out


def cases(seed: int = 0):
    """(name, rows [H, P], G, N): maps of the shapes engines load."""
    from vibe_plan.placement.eplb import rebalance_experts

    rng = np.random.default_rng(seed)
    for G, N, E, R, H in [
        (8, 1, 16, 8, 3),
        (16, 2, 32, 16, 4),
        (32, 4, 64, 32, 3),
        (8, 2, 8, 8, 2),
    ]:
        P = E + R
        w = rng.lognormal(0, 1.0, (H, E))
        eplb_map, _, _ = rebalance_experts(w, P, 1, 1, G)
        yield f"eplb global G={G} N={N}", eplb_map, G, N
        if E % N == 0:
            eplb_h, _, _ = rebalance_experts(w, P, N, N, G)
            yield f"eplb hierarchical G={G} N={N}", eplb_h, G, N
        rand = np.stack(
            [
                rng.permutation(np.concatenate([np.arange(E), rng.integers(0, E, R)]))
                for _ in range(H)
            ]
        )
        yield f"random G={G} N={N}", rand, G, N
        trivial = np.tile(np.arange(P) % E, (H, 1))
        yield f"trivial G={G} N={N}", trivial, G, N


def check_static(el) -> bool:
    ok = True
    for name, rows, G, N in cases():
        theirs = sglang_picks(el, rows, G, N)
        ours = vibe_picks(rows, G, N)
        same = (theirs == ours).mean()
        ok &= bool(same == 1.0)
        print(f"static {name:32s} picks equal: {same:.4%}")
    return ok


def check_local(el) -> bool:
    """`local`: each rank's collapsed candidate list; ranks without a near replica draw evenly."""
    CTX.moe.ep_dispatch_algorithm = "dynamic"
    ok = True
    for name, rows, G, N in cases(1):
        CTX.parallel = SimpleNamespace(ep_size=G, nnodes=N)
        E = int(rows.max()) + 1
        p2l = torch.tensor(rows)
        share = np.zeros(rows.shape)
        for q in range(G):
            view = el._compute_logical_to_all_physical_map(p2l, E, G, moe_ep_rank=q).numpy()
            for h in range(rows.shape[0]):
                for e in range(E):
                    cand = view[h, e][view[h, e] >= 0]
                    share[h, cand] += 1.0 / G / len(cand)
        ours = rank_shares(rows, G, Dispatch("local", num_nodes=N), list(range(rows.shape[0])))
        err = float(np.abs(share - ours).max())
        ok &= err < 1e-9
        print(f"local  {name:32s} max share error: {err:.2e}")
    CTX.moe.ep_dispatch_algorithm = "static"
    return ok


def check_lp() -> bool:
    """`lp`: SGLang's LP matrices (LPLBSolver), its torch IPM reference, its post-processing."""
    import sglang.kernels.ops.lplb.torch_solver as ts
    import sglang.srt.eplb.lplb_solver as lplb
    from sglang.test.kernels.lplb import solve_ipm_torch_reference

    ts.warmup = lambda *a, **k: None
    rng = np.random.default_rng(2)
    ok = True
    for name, rows, G, _N in cases(2):
        from vibe_plan.artifacts.placement import make_log2phy

        E = int(rows.max()) + 1
        worst = 0.0
        for _h, row in enumerate(rows):
            log2phy = make_log2phy(row[None], E)[0]
            solver = lplb.LPLBSolver(torch.tensor(row), torch.tensor(log2phy), G)
            counts = rng.multinomial(4096, rng.dirichlet(np.ones(E) * 0.7), size=3)
            ours = lp_shares(row, counts, G)
            for b, count in enumerate(counts):
                prob = _sglang_lp_prob(
                    solver, torch.tensor(count, dtype=torch.float32), solve_ipm_torch_reference
                )
                w = prob
                tot = np.bincount(row, weights=w, minlength=E)
                cnt = np.bincount(row, minlength=E)
                theirs = np.where(
                    tot[row] > 0, w / np.where(tot[row] > 0, tot[row], 1), 1 / cnt[row]
                )
                # Shares of near-idle experts are float32 noise in both; compare GPU token loads.
                S = len(row) // G
                gpu = np.arange(len(row)) // S
                tok_theirs = np.bincount(gpu, weights=count[row] * theirs, minlength=G)
                tok_ours = np.bincount(gpu, weights=count[row] * ours[b], minlength=G)
                worst = max(worst, float(np.abs(tok_theirs - tok_ours).max() / tok_theirs.mean()))
        # The 5-step IPM is ill-conditioned in float32: LAPACK's and torch's LU differ this much
        # (SGLang's own torch reference and its CUDA Cholesky kernel differ likewise).
        ok &= worst < 0.02
        print(f"lp     {name:32s} max GPU token error / mean GPU tokens: {worst:.2e}")
    return ok


def _sglang_lp_prob(solver, global_counts, ipm) -> np.ndarray:
    """SGLang's prep, IPM and post steps (the CUDA kernels' documented arithmetic) in torch."""
    total = torch.clamp(global_counts.sum(), min=1.0)
    t1 = global_counts[solver.log_single] / total
    b = torch.cat([global_counts[solver.log_replicated] / total, -(solver.B1 @ t1)])
    A = torch.hstack([solver.A_base, (b - solver.A_base.sum(dim=1))[:, None]])
    x = ipm(A, b, solver.c_vec)
    phy_prob = torch.zeros(solver.num_phy + 1)
    phy_prob[solver.phy_replicated] = torch.clamp(x[: solver.num_red_phy], min=0)
    phy_prob[solver.phy_single] = t1
    return phy_prob[: solver.num_phy].numpy()


def main() -> None:
    el = _stub_sglang()
    ok = check_static(el) & check_local(el) & check_lp()
    print("ALL EQUAL" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
