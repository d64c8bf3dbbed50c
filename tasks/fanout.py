"""Prefect tasks of the fan-out (flows/fanout.py): run one grid cell, version its outputs through DVC
(`dvc add` + `dvc push`: the bytes go to the DVC remote, the returned `.dvc` text names them by hash)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prefect import task

from lmops import fanout, remote
from lmops.params import load_params


@task(name="grid-cell", task_run_name="{kind}-{item}", timeout_seconds=3 * 3600)
def run_cell(kind: str, item: str, project: str) -> dict:
    return fanout.run_cell(kind, item, load_params(Path(project) / "params.yaml"), Path(project))


@task(name="dvc-add-push", retries=2, retry_delay_seconds=5)
def version_cell(kind: str, item: str, project: str, push: bool = True) -> str:
    """`dvc add` the cell's directory and push it; returns the `.dvc` file's text (its md5 and size)."""
    target = str(fanout.cell_dir(kind, item))
    dvc = str(Path(sys.executable).parent / "dvc")
    proc = subprocess.run([dvc, "add", target], cwd=project, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"dvc add {target} failed:\n{proc.stderr[-3000:]}")
    if push:
        remote.push(project, [target + ".dvc"])
    return (Path(project) / (target + ".dvc")).read_text()
