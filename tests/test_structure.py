"""The package's shape: imports point down the pipeline, no module imports another in a circle,
and no file cites a document that users of the package do not have."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "vibe_plan"


def _module(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the vibe_plan modules it imports (at any depth of its code)."""
    files = {_module(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            deps |= {n for n in names if n in files and n != mod}
        graph[mod] = deps
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return path[path.index(d) :] + [d]
            if d not in state and (found := visit(d)):
                return found
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = _cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


# (importer prefix, imported prefix): edges that would point up the pipeline.
FORBIDDEN = [
    ("vibe_plan.gpus", "vibe_plan.placement"),
    ("vibe_plan.routing", "vibe_plan.placement"),
    ("vibe_plan.engines", "vibe_plan.placement"),
    ("vibe_plan.engines", "vibe_plan.routing"),
    ("vibe_plan.engines", "vibe_plan.gpus"),
    ("vibe_plan.cost", "vibe_plan.placement"),
    ("vibe_plan.cost", "vibe_plan.engines"),
    ("vibe_plan.cost", "vibe_plan.gpus"),
    ("vibe_plan.cost", "vibe_plan.routing"),
    ("vibe_plan.artifacts", "vibe_plan.engines"),
    ("vibe_plan.artifacts", "vibe_plan.placement"),
    ("vibe_plan.model_config", "vibe_plan.gpus"),
    ("vibe_plan.model_config", "vibe_plan.routing"),
    # The library never reaches up into the command layer.
    ("vibe_plan.artifacts", "vibe_plan.commands"),
    ("vibe_plan.cost", "vibe_plan.commands"),
    ("vibe_plan.engines", "vibe_plan.commands"),
    ("vibe_plan.gpus", "vibe_plan.commands"),
    ("vibe_plan.routing", "vibe_plan.commands"),
    ("vibe_plan.placement", "vibe_plan.commands"),
    ("vibe_plan.simulate", "vibe_plan.commands"),
    ("vibe_plan.report", "vibe_plan.commands"),
    ("vibe_plan.placement", "vibe_plan.report"),
    ("vibe_plan.placement", "vibe_plan.simulate"),
    ("vibe_plan.simulate", "vibe_plan.report"),
]


def _under(mod: str, prefix: str) -> bool:
    return mod == prefix or mod.startswith(prefix + ".")


@pytest.mark.parametrize(("src", "dst"), FORBIDDEN)
def test_imports_point_down_the_pipeline(src, dst):
    graph = import_graph()
    bad = sorted(
        f"{m} -> {d}" for m, deps in graph.items() if _under(m, src) for d in deps if _under(d, dst)
    )
    assert not bad, bad


def test_library_modules_do_not_print():
    """Only commands and their renderers talk to the terminal; the library returns notes."""
    talkers = []
    for path in PKG.rglob("*.py"):
        mod = _module(path)
        if mod.startswith("vibe_plan.commands") or mod.endswith(".render"):
            continue
        if mod in ("vibe_plan.cli", "vibe_plan.launch", "vibe_plan.console"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "vibe_plan.console":
                talkers.append(mod)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                talkers.append(mod)
    assert not talkers, sorted(set(talkers))


def test_no_file_cites_documents_users_do_not_have():
    root = PKG.parent
    shipped = [*PKG.rglob("*.py"), root / "README.md", *(root / "docs").glob("*.md")]
    shipped += [*(root / "examples").glob("*.py"), *(root / "examples").glob("*.md")]
    bad = [
        str(p.relative_to(root))
        for p in shipped
        if any(doc in p.read_text() for doc in ("DESIGN.md", "REFERENCES.md", "../shared"))
    ]
    assert not bad, bad


def test_design_doc_exists_and_readme_links_it():
    root = PKG.parent
    assert (root / "docs" / "design.md").is_file()
    assert "docs/design.md" in (root / "README.md").read_text()
