"""vibe validate: structure (each kind of invalid placement), regression against another
placement, the node's devices (NVML faked at its boundary), exit codes and the JSON verdict."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from placement_inputs import load_json, skewed_counts, solve_args, write_gpus, write_routing

import vibe_plan.placement.validate as validate_mod
from vibe_plan.placement.validate import Device, visible_devices

SPEEDS = [1.0, 1.1, 1.2, 1.3]
UUIDS = [f"GPU-test-{g:04d}" for g in range(4)]


@pytest.fixture
def setup(tmp_path, vibe):
    gpus = write_gpus(tmp_path / "gpus.yaml", SPEEDS)
    routing = write_routing(tmp_path / "routing.npz", skewed_counts(6, 3, 16), num_hidden_layers=5)
    plan = tmp_path / "plan.json"
    sg = tmp_path / "plan.sglang.json"
    r = vibe(*solve_args(gpus, routing, plan, "-r", 4, "--export", f"sglang={sg}"))
    assert r.code == 0, r.err
    linear = tmp_path / "linear.json"
    r = vibe(*solve_args(gpus, routing, linear, "-r", 4, "-m", "linear"))
    assert r.code == 0, r.err
    return {
        "gpus": gpus,
        "routing": routing,
        "plan": plan,
        "sg": sg,
        "linear": linear,
        "d": tmp_path,
    }


def check(vibe, s, path, *extra, profiles=True):
    args = ["validate", path]
    if profiles:
        args += ["--gpus", s["gpus"], "--routing", s["routing"]]
    return vibe(*args, *extra)


def edited(s, name, fn):
    """The plan's JSON with `fn(doc)` applied, written to `name`."""
    doc = load_json(s["plan"])
    fn(doc)
    path = s["d"] / name
    path.write_text(json.dumps(doc))
    return path


# ----- structure -----


def test_valid_placements_pass(setup, vibe):
    s = setup
    r = check(vibe, s, s["plan"], profiles=False)
    assert r.code == 0 and r.out.startswith("valid: ") and "structure ok" in r.out
    r = check(vibe, s, s["plan"])
    assert r.code == 0 and "fits the profiles" in r.out
    r = check(vibe, s, s["sg"])
    assert r.code == 0, r.out + r.err
    assert len(r.out.strip().splitlines()) == 1  # one-line verdict


def set_row(i, row):
    def fn(doc):
        doc["physical_to_logical_map"][i] = row

    return fn


@pytest.mark.parametrize(
    ("name", "fn", "says"),
    [
        ("schema.json", lambda d: d.update(schema="vibe.placement/v9"), "schema"),
        ("missing.json", set_row(0, [0] * 20), "no slot"),
        ("range.json", set_row(1, list(range(19)) + [99]), "expert ids"),
        ("ragged.json", set_row(2, list(range(16))), "different lengths"),
        ("short.json", lambda d: d.update(physical_to_logical_map=[list(range(16))] * 3), "shape"),
        (
            "gpus.json",
            lambda d: d.update(num_gpus=2, slots_per_gpu=10, gpus=[]),
            "GPU profile has 4",
        ),
        ("layers.json", lambda d: d.update(layer_ids=[1, 2, 4]), "layer_ids"),
        ("uuid.json", lambda d: d["gpus"][2].update(uuid="GPU-other"), "another fleet"),
        ("rule.json", lambda d: d["dispatch"].update(rule="magic"), "dispatch.rule"),
        ("solved.json", lambda d: d["solved_for"].update(tokens=[0]), "solved_for.tokens"),
        ("nan.json", lambda d: d["predicted"].update(makespan_us=["x"]), "finite numbers"),
    ],
)
def test_each_kind_of_invalid_placement_fails(setup, vibe, name, fn, says):
    r = check(vibe, setup, edited(setup, name, fn))
    assert r.code == 1, r.out + r.err
    assert r.out.startswith("invalid: ") and says in r.out, r.out


def test_unreadable_and_unknown_files_are_invalid(setup, vibe):
    s = setup
    text = s["d"] / "text.json"
    text.write_text("not json at all")
    r = check(vibe, s, text)
    assert r.code == 1 and "not valid JSON" in r.out
    other = s["d"] / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    r = check(vibe, s, other)
    assert r.code == 1 and "unknown placement format" in r.out


def test_placement_for_other_profiles_fails(setup, vibe):
    s = setup
    more = write_routing(s["d"] / "more.npz", skewed_counts(6, 3, 32), num_hidden_layers=5)
    r = vibe("validate", s["plan"], "--gpus", s["gpus"], "--routing", more)
    assert r.code == 1 and "experts" in r.out
    two = write_gpus(s["d"] / "two.yaml", SPEEDS[:2])
    r = vibe("validate", s["plan"], "--gpus", two, "--routing", s["routing"])
    assert r.code == 1 and "num_gpus" in r.out
    # An SGLang file must have a row per decoder layer of the routing profile.
    seven = write_routing(s["d"] / "seven.npz", skewed_counts(6, 3, 16), num_hidden_layers=7)
    r = vibe("validate", s["sg"], "--gpus", s["gpus"], "--routing", seven)
    assert r.code == 1 and r.out.startswith("invalid: ")


# ----- regression -----


def test_regression_against_another_placement(setup, vibe):
    s = setup
    r = check(vibe, s, s["linear"], "--against", s["plan"])
    assert r.code == 1 and "slower than" in r.out and "regression" in r.out
    r = check(vibe, s, s["plan"], "--against", s["linear"])
    assert r.code == 0 and "faster than" in r.out
    r = check(vibe, s, s["linear"], "--against", s["plan"], "--max-regression", "10")
    assert r.code == 0
    r = check(vibe, s, s["linear"], "--against", s["plan"], "--json")
    v = json.loads(r.out)
    assert r.code == 1 and v["valid"] is False and v["schema"] == "vibe.validate/v1"
    reg = next(c for c in v["checks"] if c["name"] == "regression")
    assert reg["regression"] > 0.01 and reg["time_us"] > reg["against_us"]
    # The same placement in an engine format scores the same.
    r = check(vibe, s, s["sg"], "--against", s["plan"], "--max-regression", "0", "--json")
    assert r.code == 0 and json.loads(r.out)["checks"][1]["regression"] == 0


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--max-regression", "-0.1"], "--max-regression"),
        (["--dispatch", "fastest"], "dispatch rule"),
    ],
)
def test_bad_options_are_usage_errors(setup, vibe, extra, says):
    r = check(vibe, setup, setup["plan"], *extra)
    assert r.code == 2 and r.err.startswith("error: ") and says in r.err and r.out == ""


def test_bad_inputs_are_usage_errors(setup, vibe):
    s = setup
    r = vibe("validate", s["d"] / "nope.json")
    assert r.code == 2 and "does not exist" in r.err
    r = vibe("validate", s["plan"], "--against", s["linear"])
    assert r.code == 2 and "--gpus and --routing" in r.err
    r = vibe("validate", s["plan"], "--gpus", s["gpus"])
    assert r.code == 2 and "both" in r.err
    r = vibe("validate", s["sg"])
    assert r.code == 2 and "give --gpus and --routing" in r.err
    broken = s["d"] / "broken.json"
    broken.write_text("{")
    r = check(vibe, s, s["plan"], "--against", broken)
    assert r.code == 2 and r.err.startswith("error: --against: ")


# ----- devices (NVML faked at its boundary) -----


def fake_node(monkeypatch, devices, host="node0", env=None):
    monkeypatch.setattr(validate_mod, "read_devices", lambda: list(devices))
    monkeypatch.setattr(validate_mod, "host_name", lambda: host)
    for key in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"):
        monkeypatch.delenv(key, raising=False)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)


def node(uuids, names=None):
    """NVML's view: index i at PCI bus 0000:0i:00.0 with the given UUIDs."""
    names = names or ["H100"] * len(uuids)
    return [
        Device(i, u, n, f"00000000:{i + 1:02X}:00.0")
        for i, (u, n) in enumerate(zip(uuids, names, strict=True))
    ]


def test_devices_match(setup, vibe, monkeypatch):
    fake_node(monkeypatch, node(UUIDS))
    r = check(vibe, setup, setup["plan"], "--devices")
    assert r.code == 0 and "run on their planned GPUs" in r.out


def test_device_order_mismatch_names_the_fix(setup, vibe, monkeypatch):
    swapped = [UUIDS[1], UUIDS[0], UUIDS[2], UUIDS[3]]
    fake_node(monkeypatch, node(swapped))
    r = check(vibe, setup, setup["plan"], "--devices")
    assert r.code == 1
    assert "rank 0 would run on GPU-test-0001 (cuda:0), planned on GPU-test-0000" in r.out
    assert "fix: export CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=1,0,2,3" in r.out
    r = check(vibe, setup, setup["plan"], "--devices", "--json")
    v = json.loads(r.out)
    assert v["fix"] == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "1,0,2,3"}
    # Applying the fix, or naming the GPUs by UUID, passes.
    env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "1,0,2,3"}
    fake_node(monkeypatch, node(swapped), env=env)
    assert check(vibe, setup, setup["plan"], "--devices").code == 0
    fake_node(monkeypatch, node(swapped), env={"CUDA_VISIBLE_DEVICES": ",".join(UUIDS)})
    assert check(vibe, setup, setup["plan"], "--devices").code == 0


def test_a_replaced_gpu_fails(setup, vibe, monkeypatch):
    fake_node(monkeypatch, node([UUIDS[0], UUIDS[1], "GPU-new", UUIDS[3]]))
    r = check(vibe, setup, setup["plan"], "--devices")
    assert r.code == 1 and "rank 2's GPU GPU-test-0002 is not on this node" in r.out


def test_too_few_visible_devices_fail(setup, vibe, monkeypatch):
    fake_node(monkeypatch, node(UUIDS), env={"CUDA_VISIBLE_DEVICES": "0,1"})
    r = check(vibe, setup, setup["plan"], "--devices")
    assert r.code == 1 and "rank 2 would run on no device" in r.out


def test_mixed_gpu_models_need_pci_order(setup, vibe, monkeypatch):
    fake_node(monkeypatch, node(UUIDS, ["H100", "H100", "A100", "A100"]))
    r = check(vibe, setup, setup["plan"], "--devices")
    assert r.code == 1 and "CUDA_DEVICE_ORDER" in r.out
    fake_node(
        monkeypatch,
        node(UUIDS, ["H100", "H100", "A100", "A100"]),
        env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID"},
    )
    assert check(vibe, setup, setup["plan"], "--devices").code == 0


def test_no_uuids_or_another_node_fail(setup, vibe, monkeypatch):
    s = setup
    bare = write_gpus(s["d"] / "bare.yaml", SPEEDS, uuids=False)
    plan = s["d"] / "bare.json"
    assert vibe(*solve_args(bare, s["routing"], plan, "-r", 4)).code == 0
    fake_node(monkeypatch, node(UUIDS))
    r = vibe("validate", plan, "--devices")
    assert r.code == 1 and "records no GPU UUIDs" in r.out
    fake_node(monkeypatch, node(["GPU-x", "GPU-y"]), host="elsewhere")
    r = check(vibe, s, s["plan"], "--devices")
    assert r.code == 1 and "none of the placement's GPUs is on this node" in r.out


def test_the_ranks_of_this_node_of_several(tmp_path, vibe, monkeypatch):
    gpus = write_gpus(tmp_path / "g.yaml", SPEEDS, hosts=["a", "a", "b", "b"])
    routing = write_routing(tmp_path / "r.npz", skewed_counts(4, 2, 16))
    plan = tmp_path / "p.json"
    assert vibe(*solve_args(gpus, routing, plan)).code == 0
    fake_node(monkeypatch, node(UUIDS[2:]), host="b")
    r = vibe("validate", plan, "--devices")
    assert r.code == 0 and "ranks 2..3" in r.out
    fake_node(monkeypatch, node(UUIDS[2:][::-1]), host="b")
    r = vibe("validate", plan, "--devices")
    assert r.code == 1 and "CUDA_VISIBLE_DEVICES=1,0" in r.out


def test_without_nvml_devices_is_a_usage_error(setup, vibe, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # as if nvidia-ml-py were not installed
    r = check(vibe, setup, setup["plan"], "--devices")
    assert r.code == 2 and "nvidia-ml-py" in r.err


def test_visible_devices_follows_cuda_rules():
    devs = node(["GPU-aa", "GPU-bb", "GPU-cc"])
    assert [d.uuid for d in visible_devices(devs, {})[0]] == ["GPU-aa", "GPU-bb", "GPU-cc"]
    env = {"CUDA_VISIBLE_DEVICES": "2,0"}
    assert [d.uuid for d in visible_devices(devs, env)[0]] == ["GPU-cc", "GPU-aa"]
    env = {"CUDA_VISIBLE_DEVICES": "1,7,0"}  # CUDA stops at an invalid entry
    assert [d.uuid for d in visible_devices(devs, env)[0]] == ["GPU-bb"]
    env = {"CUDA_VISIBLE_DEVICES": "GPU-b,GPU-c"}  # unique UUID prefixes
    assert [d.uuid for d in visible_devices(devs, env)[0]] == ["GPU-bb", "GPU-cc"]
    assert visible_devices(devs, {"CUDA_VISIBLE_DEVICES": ""})[0] == []
    assert visible_devices(devs, {"CUDA_VISIBLE_DEVICES": "MIG-1"})[0] is None


def test_library_reads_a_map_without_files(setup):
    """The check is the library's: the command only prints it."""
    from vibe_plan.placement.validate import validate_run

    run = validate_run(setup["plan"], setup["gpus"], setup["routing"], against=setup["linear"])
    assert run.ok and [c.name for c in run.checks] == ["structure", "regression"]
    assert np.isfinite(run.checks[1].data["time_us"])


def test_read_devices_through_a_fake_nvml(monkeypatch):
    """The NVML calls themselves, against a stand-in module (bytes as old pynvml returns them)."""
    import types

    class NVMLError(Exception):
        pass

    calls = []
    fake = types.SimpleNamespace(
        NVMLError=NVMLError,
        nvmlInit=lambda: calls.append("init"),
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUUID=lambda h: f"GPU-{h}".encode(),
        nvmlDeviceGetName=lambda h: "NVIDIA H200",
        nvmlDeviceGetPciInfo=lambda h: types.SimpleNamespace(busId=f"00000000:0{h}:00.0".encode()),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    got = validate_mod.read_devices()
    assert got == [
        Device(0, "GPU-0", "NVIDIA H200", "00000000:00:00.0"),
        Device(1, "GPU-1", "NVIDIA H200", "00000000:01:00.0"),
    ]
    assert calls == ["init", "shutdown"]

    def broken():
        raise NVMLError("Driver Not Loaded")

    fake.nvmlInit = broken
    with pytest.raises(validate_mod.VibeError, match="Driver Not Loaded"):
        validate_mod.read_devices()
