"""A throwaway lmops project (git + DVC) with tiny params, for pipeline-level tests."""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT, TINY

BIN = str(Path(sys.executable).parent)
ENV = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", ""), "DVC_NO_ANALYTICS": "1",
       "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def sh(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def dvc(args: list[str], cwd: Path) -> str:
    return sh([os.path.join(BIN, "dvc"), *args], cwd)


# Stages a test may leave out (none by default). The closed-loop scenario is no stage: it is the
# `lmops-scenario` flow, driven end to end by tests/flows/test_drift_loop.py. The real-model import lives in
# real/dvc.yaml, outside the default pipeline: tests/model/test_real_model.py drives it.
SKIP_STAGES: tuple[str, ...] = ()


def _paths(entries) -> set[str]:
    return {next(iter(e)) if isinstance(e, dict) else e for e in entries or []}


def _without(stages: dict, skip: set[str]) -> dict:
    """`stages` less those in `skip` and every stage that depends on what a left-out stage writes
    (e.g. the summary, when a stage whose metrics it reads is left out)."""
    kept = {k: v for k, v in stages.items() if k not in skip}
    while True:
        gone = {k: v for k, v in stages.items() if k not in kept}
        made = set().union(*[_paths(v.get("outs")) | _paths(v.get("metrics")) | _paths(v.get("plots"))
                             for v in gone.values()]) if gone else set()
        drop = {k for k, v in kept.items() if set(v.get("deps", [])) & made}
        if not drop:
            return kept
        kept = {k: v for k, v in kept.items() if k not in drop}


def make_project(dest: Path, params: dict | None = None, skip: tuple[str, ...] = SKIP_STAGES) -> Path:
    """Copy the pipeline definition and code into `dest` as a fresh git + DVC repo with tiny params."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore", "lmops", "prompts"):
        src = ROOT / name
        (shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
         if src.is_dir() else shutil.copy(src, dest / name))
    spec = yaml.safe_load((dest / "dvc.yaml").read_text())
    spec["stages"] = _without(spec["stages"], set(skip))
    (dest / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    # The tiny params train from scratch; the default checkpoint directory is still a declared dep.
    (dest / "models" / "pretrained").mkdir(parents=True)
    (dest / "models" / "pretrained" / "README.md").write_text("placeholder for tests\n")
    (dest / "params.yaml").write_text(yaml.safe_dump(params or copy.deepcopy(TINY)))
    sh(["git", "init", "-q"], dest)
    dvc(["init", "-q"], dest)
    (dest / ".dvc" / "plots").mkdir(exist_ok=True)  # the project's plot templates (heatmap, by_method, ...)
    for template in (ROOT / ".dvc" / "plots").glob("*.json"):
        shutil.copy(template, dest / ".dvc" / "plots" / template.name)
    dvc(["remote", "add", "-d", "local", str(dest.parent / f"{dest.name}-remote")], dest)
    sh(["git", "add", "-A"], dest)
    sh(["git", "commit", "-qm", "init"], dest)
    return dest
