"""Engine round trip, exports: every file vibe writes for an engine passes the checks the engine's
own loading code applies (TensorRT-LLM's load-balancer config, EPLB-style tensors as vLLM pads
them). The dumps' side is test_engine_imports.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from engine_dumps import (
    MOE,
    MTP,
    NH,
    E,
    import_dump,
    trt_run,
    write_model,
)
from placement_inputs import load_json, placement_map, solve_args, write_gpus, write_routing

from vibe_plan.artifacts import Placement
from vibe_plan.engines import export_placement, load_placement
from vibe_plan.errors import VibeError


@pytest.fixture
def model(tmp_path) -> Path:
    return write_model(tmp_path)


# --- exports: TensorRT-LLM loads what vibe writes -------------------------------------------------


def trtllm_load(
    text: str,
    *,
    num_experts: int,
    moe_layers: list[int],
    num_hidden_layers: int,
    mtp_layers: int,
    ep_size: int,
) -> dict[int, list[int]]:
    """The checks TensorRT-LLM applies when it loads `moe_config.load_balancer: PATH`, in order:

    - `TorchLlmArgs.validate_load_balancer`: `yaml.safe_load`, then `MoeLoadBalancerConfig(**cfg)`,
      a strict pydantic model: only `num_slots`, `initial_global_assignments`
      (Dict[int, List[int]]) and `layer_updates_per_iter` (int);
    - `MoeLoadBalancerConfig.setup(ep_rank, ep_size)`: `num_slots` set and divisible by ep_size;
    - every MoE layer the model builds, the MTP layers `num_hidden_layers + i` included (the MTP
      module passes `layer_idx + start_layer_idx`), calls
      `get_layer_initial_global_assignments(layer_idx)`: KeyError when the key is absent,
      ValueError when the row's length is not `num_slots`;
    - `MoE._init_load_balancer`: the row is a list, `num_slots >= num_experts`, and
      `set(row) == set(range(num_experts))` (every expert at least once, no other id); each rank
      takes `row[slot_start:slot_end]`, `num_slots // ep_size` slots;
    - `MoeLoadBalancer.is_static_routing`: `layer_updates_per_iter == 0` keeps the rows fixed.
    """
    cfg = yaml.safe_load(text)
    assert isinstance(cfg, dict)
    assert set(cfg) <= {"num_slots", "initial_global_assignments", "layer_updates_per_iter"}
    num_slots = cfg["num_slots"]
    assign = cfg["initial_global_assignments"]
    assert type(num_slots) is int and type(cfg.get("layer_updates_per_iter", 0)) is int
    assert isinstance(assign, dict)
    for key, row in assign.items():
        assert type(key) is int and isinstance(row, list) and all(type(x) is int for x in row)
    assert cfg.get("layer_updates_per_iter", 0) == 0, "static placement"
    assert num_slots % ep_size == 0
    per_rank = num_slots // ep_size
    registered = [*moe_layers, *range(num_hidden_layers, num_hidden_layers + mtp_layers)]
    for layer_idx in registered:
        if layer_idx not in assign:
            raise KeyError(f"layer_idx {layer_idx} not found in `initial_global_assignments`.")
        row = assign[layer_idx]
        if len(row) != num_slots:
            raise ValueError(f"Assignment length ({len(row)}) for layer {layer_idx}")
        assert num_slots >= num_experts
        assert set(row) == set(range(num_experts)), layer_idx
        for ep_rank in range(ep_size):
            assert len(row[ep_rank * per_rank : (ep_rank + 1) * per_rank]) == per_rank
    return assign


def test_trtllm_export_with_mtp_loads(vibe, model, tmp_path):
    """Import with --model (meta.mtp_layers = 1), solve, export: the file TensorRT-LLM reads has
    a row for every MoE layer and for MTP layer 5; --mtp-layers overrides the count."""
    stats, _ = trt_run(np.random.default_rng(8), ranks=2, iters=range(6))
    dump = stats.save(tmp_path / "stats")
    routing = tmp_path / "routing.npz"
    import_dump(vibe, dump, routing, "--model", model)
    gpus = write_gpus(tmp_path / "gpus.yaml", [1.0, 1.1, 1.2, 1.3])

    def solve(name: str, *extra: Any) -> tuple[str, Any]:
        out = tmp_path / name
        r = vibe(
            *solve_args(
                gpus,
                routing,
                out / "p.json",
                "-r",
                4,
                *extra,
                "--export",
                f"trtllm={out / 't.yaml'}",
                "--export",
                f"eplb={out / 'e.json'}",
                "--export",
                f"sglang={out / 's.json'}",
            )
        )
        assert r.code == 0, r.err
        return (out / "t.yaml").read_text(), r

    (tmp_path / "a").mkdir()
    text, r = solve("a")
    assert "warning" not in r.err
    assign = trtllm_load(
        text, num_experts=E, moe_layers=MOE, num_hidden_layers=NH, mtp_layers=1, ep_size=4
    )
    assert sorted(assign) == [*MOE, MTP]
    m = placement_map(tmp_path / "a" / "p.json")
    for li, layer in enumerate(MOE):
        assert assign[layer] == m[li].tolist()
    with pytest.raises(KeyError, match="layer_idx 6"):  # a model served with 2 MTP layers
        trtllm_load(
            text, num_experts=E, moe_layers=MOE, num_hidden_layers=NH, mtp_layers=2, ep_size=4
        )

    (tmp_path / "b").mkdir()
    text, _ = solve("b", "--mtp-layers", 2)
    assert sorted(
        trtllm_load(
            text, num_experts=E, moe_layers=MOE, num_hidden_layers=NH, mtp_layers=2, ep_size=4
        )
    ) == [*MOE, MTP, MTP + 1]
    (tmp_path / "c").mkdir()
    text, _ = solve("c", "--mtp-layers", 0)
    assert sorted(yaml.safe_load(text)["initial_global_assignments"]) == MOE

    # vibe evaluate reads the file back: the MTP row is not scored and not warned about
    folder = tmp_path / "a"
    r = vibe("evaluate", "--gpus", gpus, "--routing", routing, folder / "p.json", folder / "t.yaml")
    assert r.code == 0, r.err
    assert "not scored" not in r.err

    bad = vibe(*solve_args(gpus, routing, tmp_path / "x.json", "--mtp-layers", -1))
    assert bad.code == 2 and "--mtp-layers" in bad.err and not (tmp_path / "x.json").exists()


def test_trtllm_export_full_size_deepseek(tmp_path):
    """DeepSeek-V3 at EP32 with 32 redundant slots and its one MTP layer: 59 rows of 288 slots."""
    rng = np.random.default_rng(9)
    layers = list(range(3, 61))
    rows = np.stack([rng.permutation(np.r_[np.arange(256), rng.choice(256, 32)]) for _ in layers])
    p = Placement(32, 9, 256, layers, rows)
    export_placement(p, [("trtllm", tmp_path / "t.yaml")], 61, mtp_layers=1)
    assign = trtllm_load(
        (tmp_path / "t.yaml").read_text(),
        num_experts=256,
        moe_layers=layers,
        num_hidden_layers=61,
        mtp_layers=1,
        ep_size=32,
    )
    assert len(assign) == 59 and assign[61] == (np.arange(288) % 256).tolist()


@pytest.mark.parametrize(
    ("meta", "warned"),
    [
        ({"model_type": "deepseek_v3", "architecture": "DeepseekV3ForCausalLM"}, False),
        ({"model_type": "kimi_k2"}, False),
        ({"model_type": "qwen3_moe"}, False),
        ({"model_type": "glm4_moe", "architecture": "Glm4MoeForCausalLM"}, True),
        ({"model_type": "deepseek_v2"}, True),
        ({}, False),  # no model named: nothing to say
    ],
)
def test_trtllm_export_warns_for_unsupported_architectures(vibe, tmp_path, meta, warned):
    gpus = write_gpus(tmp_path / "gpus.yaml", [1.0, 1.1, 1.2, 1.3])
    routing = write_routing(tmp_path / "r.npz", num_hidden_layers=5, **meta)
    r = vibe(
        *solve_args(gpus, routing, tmp_path / "p.json", "--export", f"trtllm={tmp_path / 't.yaml'}")
    )
    assert r.code == 0, r.err
    assert ("applies moe_config.load_balancer only to" in r.err) == warned, r.err


# --- exports: EPLB-style tensors as vLLM pads them ---------------------------------------------


def test_eplb_log2phy_is_padded_to_redundant_plus_one(tmp_path):
    """`log2phy` [L, E, R + 1], slots ascending then -1 (vLLM's `logical_to_physical_map`, EPLB's
    `maxlogcnt`); the reader takes that, the largest replica count as width, or vLLM's 1024."""
    phy2log = np.array([[0, 1, 2, 3, 0, 1], [3, 2, 1, 0, 1, 3]])  # R = 2, at most 2 replicas
    p = Placement(2, 3, 4, [1, 2], phy2log)
    export_placement(p, [("eplb", tmp_path / "e.json")], 3)
    doc = load_json(tmp_path / "e.json")
    log2phy = np.asarray(doc["log2phy"])
    assert log2phy.shape == (2, 4, 2 + 1)
    assert log2phy[0, 0].tolist() == [0, 4, -1] and log2phy[0, 2].tolist() == [2, -1, -1]
    assert log2phy[1, 3].tolist() == [0, 5, -1] and log2phy[1, 1].tolist() == [2, 4, -1]
    for width in (2, 1024):
        other = np.full((2, 4, width), -1)
        other[:, :, : min(width, 3)] = log2phy[:, :, : min(width, 3)]
        (tmp_path / "w.json").write_text(json.dumps({**doc, "log2phy": other.tolist()}))
        back, _ = load_placement(tmp_path / "w.json", 2, [1, 2], 4)
        assert np.array_equal(back.phy2log, phy2log)
    holes = log2phy.copy()
    holes[0, 0] = [0, -1, 4]  # engines take the first logcnt entries: a -1 among them is wrong
    (tmp_path / "h.json").write_text(json.dumps({**doc, "log2phy": holes.tolist()}))
    with pytest.raises(VibeError, match=r"log2phy\[0\]\[0\]"):
        load_placement(tmp_path / "h.json", 2, [1, 2], 4)
    narrow = log2phy[:, :, :1]  # narrower than the replicas: slots go missing
    (tmp_path / "n.json").write_text(json.dumps({**doc, "log2phy": narrow.tolist()}))
    with pytest.raises(VibeError, match="inconsistent"):
        load_placement(tmp_path / "n.json", 2, [1, 2], 4)
