"""`dvc repro` on the real dvc.yaml in a temporary git repo: runs, caches, reruns only what changed."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from lmops.stages import STAGES
from tests.conftest import ROOT
from tests.imports import covered, lmops_closure
from tests.project import BIN, ENV, dvc, make_project, sh


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def test_repro_then_noop_then_param_change(tmp_path, monkeypatch):
    project = make_project(tmp_path / "proj")
    trace = tmp_path / "trace"
    trace.mkdir()
    monkeypatch.setitem(ENV, "LMOPS_TRACE_MODULES", str(trace))
    first = dvc(["repro"], project)
    monkeypatch.delitem(ENV, "LMOPS_TRACE_MODULES")
    spec = yaml.safe_load((project / "dvc.yaml").read_text())
    all_stages = set(spec["stages"])
    assert ran_stages(first) == all_stages
    for stage in sorted(all_stages):  # dvc.yaml's deps cover every lmops module the stage really loaded
        loaded = (trace / f"stage-{stage}.txt").read_text().split()
        missing = sorted({f for f in loaded if not covered(Path(f), spec["stages"][stage]["deps"])})
        assert not missing, f"stage {stage} loaded {missing}, which dvc.yaml does not list as its deps"
    base = json.loads((project / "metrics" / "base.json").read_text())
    assert base["val_perplexity"] < base["uniform_perplexity"]

    assert ran_stages(dvc(["repro"], project)) == set()  # nothing changed, nothing runs
    assert_every_command_leaves_dvc_status_clean(project)
    assert_touching_code_dirties_its_stage(project, all_stages)

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["evaluate"]["max_items"] = 5
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    # the params check, exactly the dependent stage, and the summary when evaluate's figures changed
    assert ran_stages(dvc(["repro"], project)) - {"summary"} == {"check", "evaluate"}

    dvc(["push"], project)  # the local remote receives the versioned outputs
    sh(["git", "add", "-A"], project)
    sh(["git", "commit", "-qm", "tiny run"], project)
    assert "Ran experiment" in dvc(["exp", "run", "-S", "evaluate.max_items=3"], project)
    changed = [line for line in sh(["git", "diff", "-U0", "params.yaml"], project).splitlines()
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert changed == ["-  max_items: 5", "+  max_items: 3"], changed  # DVC rewrote one line, nothing else
    shown = dvc(["exp", "show", "--no-pager", "--csv"], project)
    assert "val_perplexity" in shown and "evaluate.max_items" in shown


COMMANDS = [["--help"], ["params"], ["models", "list"], ["prompts", "list"]] + [
    [name, "--help"] for name in ("stage", "serve", "simulate", "models", "prompts", "run", "up", "scenario", "pretrain")]


def assert_every_command_leaves_dvc_status_clean(project) -> None:
    """Every `lmops` command once, with bytecode writing on (as a user runs them): `dvc status` stays clean."""
    env = {k: v for k, v in ENV.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join([str(project), ENV.get("PYTHONPATH", "")])  # the project's own lmops/
    for args in COMMANDS:
        proc = subprocess.run([os.path.join(BIN, "lmops"), *args], cwd=project, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, f"lmops {' '.join(args)}: {proc.stderr[-2000:]}"
    assert list(project.rglob("__pycache__")), "bytecode writing was off"
    assert changed_stages(project) == set(), "running lmops commands made `dvc status` report changes"


def changed_stages(project) -> set[str]:
    status = json.loads(dvc(["status", "--json"], project) or "{}")
    return {name.split(":")[-1] for name in status}


def assert_touching_code_dirties_its_stage(project, stages: set[str]) -> None:
    """For each stage, one lmops file that it imports and no other stage's module: appending a comment
    makes `dvc status` list that stage (its deps cover the code it runs); the file is then restored."""
    for stage in sorted(stages):
        path = project / "lmops" / "stages" / f"{STAGES[stage]}.py"
        assert str(path.relative_to(project)) in {str(f) for f in lmops_closure(f"lmops.stages.{STAGES[stage]}", project)}
        original = path.read_bytes()
        path.write_bytes(original + b"\n# touched\n")
        try:
            assert stage in changed_stages(project), f"touching {path.name} did not dirty stage {stage}"
        finally:
            path.write_bytes(original)
    shared = project / "lmops" / "model" / "build.py"  # imported by every stage that loads a model
    original = shared.read_bytes()
    shared.write_bytes(original + b"\n# touched\n")
    try:
        users = {s for s in stages if "lmops/model/build.py" in {str(f) for f in lmops_closure(f"lmops.stages.{STAGES[s]}", project)}}
        assert users and users <= changed_stages(project), (users, changed_stages(project))
    finally:
        shared.write_bytes(original)
    assert changed_stages(project) == set()


def test_params_yaml_is_in_the_format_dvc_writes(tmp_path):
    """`dvc exp run -S` rewrites params.yaml with DVC's YAML writer: the committed file is already in its
    format (block lists, nulls left empty, no long flow lines it would wrap), so the diff is the one key."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    apply_overrides(str(path), ["evaluate.max_items=3"])
    before, after = (ROOT / "params.yaml").read_text().splitlines(), path.read_text().splitlines()
    diff = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(before) == len(after) and len(diff) == 1 and diff[0][1].strip() == "max_items: 3", diff
