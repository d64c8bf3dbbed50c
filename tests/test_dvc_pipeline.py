"""`dvc repro` on the real dvc.yaml in a temporary git repo: runs, caches, reruns only what changed."""
import json
import re
from pathlib import Path

import yaml

from lmops.stages import STAGES
from tests.imports import covered, lmops_closure
from tests.project import ENV, dvc, make_project, sh


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
    assert_touching_code_dirties_its_stage(project, all_stages)

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["evaluate"]["max_items"] = 5
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert ran_stages(dvc(["repro"], project)) == {"check", "evaluate"}  # the params check, then exactly the dependent stage

    dvc(["push"], project)  # the local remote receives the versioned outputs
    sh(["git", "add", "-A"], project)
    sh(["git", "commit", "-qm", "tiny run"], project)
    assert "Ran experiment" in dvc(["exp", "run", "-S", "evaluate.max_items=3"], project)
    shown = dvc(["exp", "show", "--no-pager", "--csv"], project)
    assert "val_perplexity" in shown and "evaluate.max_items" in shown


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
