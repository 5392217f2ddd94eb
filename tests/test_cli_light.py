"""The light core: a profiling command without its extra fails with one `error:` naming it."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run_without(modules: list[str], args: list[str]) -> subprocess.CompletedProcess:
    script = textwrap.dedent(
        f"""
        import sys
        for name in {modules!r}:
            sys.modules[name] = None  # makes `import name` raise ModuleNotFoundError
        from vibe_plan.cli import main
        sys.exit(main({args!r}))
        """
    )
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )


def test_profile_gpus_without_torch_names_the_gpu_extra(tmp_path):
    out = tmp_path / "g.yaml"
    res = _run_without(
        ["torch"],
        ["profile-gpus", "--model", "qwen3-30b-a3b", "--device", "cpu", "--out", str(out)],
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error:") and "vibe-plan[gpu]" in res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists()


def test_profile_routing_without_transformers_names_the_routing_extra(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(
        '{"model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2, '
        '"num_hidden_layers": 2}'
    )
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"prompt": "hello"}\n')
    out = tmp_path / "r.npz"
    res = _run_without(
        ["torch", "transformers"],
        ["profile-routing", "--model", str(model), "--trace", str(trace), "--out", str(out)],
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error:") and "vibe-plan[routing]" in res.stderr
    assert not out.exists()
