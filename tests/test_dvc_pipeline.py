"""`dvc repro` on the real dvc.yaml in a temporary git repo: runs, caches, reruns only what changed."""
import json
import re

import yaml

from tests.project import dvc, make_project, sh


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def test_repro_then_noop_then_param_change(tmp_path):
    project = make_project(tmp_path / "proj")
    first = dvc(["repro"], project)
    all_stages = set(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])
    assert ran_stages(first) == all_stages
    base = json.loads((project / "metrics" / "base.json").read_text())
    assert base["val_perplexity"] < base["uniform_perplexity"]

    assert ran_stages(dvc(["repro"], project)) == set()  # nothing changed, nothing runs

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["evaluate"]["max_items"] = 5
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert ran_stages(dvc(["repro"], project)) == {"evaluate"}  # exactly the dependent stage

    dvc(["push"], project)  # the local remote receives the versioned outputs
    sh(["git", "add", "-A"], project)
    sh(["git", "commit", "-qm", "tiny run"], project)
    assert "Ran experiment" in dvc(["exp", "run", "-S", "evaluate.max_items=3"], project)
    shown = dvc(["exp", "show", "--no-pager", "--csv"], project)
    assert "val_perplexity" in shown and "evaluate.max_items" in shown
