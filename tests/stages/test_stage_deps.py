"""`dvc.yaml` deps cover the code each stage runs, and the import graph runs one way."""
from __future__ import annotations

import ast
import subprocess
import sys

import pytest
import yaml

from lmops.stages import STAGES
from tests.conftest import ROOT
from tests.imports import covered, lmops_closure

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())


@pytest.mark.parametrize("stage", sorted(DVC["stages"]))
def test_stage_deps_cover_every_lmops_module_it_imports(stage):
    assert stage in STAGES
    files = lmops_closure(f"lmops.stages.{STAGES[stage]}")
    assert f"lmops/stages/{STAGES[stage]}.py" in {str(f) for f in files}
    missing = sorted(str(f) for f in files if not covered(f, DVC["stages"][stage]["deps"]))
    assert not missing, f"dvc.yaml stage {stage!r} runs these files but does not depend on them: {missing}"


def test_lmops_never_imports_the_orchestration_layer():
    bad = []
    for path in sorted((ROOT / "lmops").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            bad += [f"{path.relative_to(ROOT)}: {n}" for n in names
                    if n.split(".")[0] in ("prefect", "flows", "tasks", "deployments")]
    assert not bad, bad


def _module_graph() -> dict[str, set[str]]:
    """lmops module -> lmops modules it imports at module level (import time, where cycles bite)."""
    graph: dict[str, set[str]] = {}
    for path in (ROOT / "lmops").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        deps = set()
        for node in ast.parse(path.read_text()).body:  # top level only; lazy imports cannot cycle at import
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lmops") and not node.level:
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("lmops")}
        graph[name] = deps
    return graph


def test_no_import_cycles_in_lmops():
    graph = _module_graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep in graph and not state.get(dep):
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node, [node])
    assert not cycles, cycles


def test_library_packages_never_import_stages():
    bad = [f"{m} imports {d}" for m, deps in _module_graph().items() if not m.startswith("lmops.stages")
           and m != "lmops.cli" for d in deps if d.startswith("lmops.stages")]
    assert not bad, bad


def test_core_cli_imports_no_prefect_at_run_time(tmp_path):
    """`lmops params` (a core command) runs without loading prefect, flows/ or deployments/."""
    layers = ("prefect", "flows", "deployments", "tasks")
    code = (f"import sys; from lmops.cli import main; main(['--root', {str(ROOT)!r}, 'params']); "
            f"print([m for m in sys.modules if m.split('.')[0] in {layers!r}])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
