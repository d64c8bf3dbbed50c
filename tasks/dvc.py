"""Prefect tasks that run DVC: the reproducible stages run through `dvc repro`, so a Prefect run
and a local `dvc repro` share one cache and skip the same unchanged work."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prefect import task
from prefect.logging import get_run_logger


def _dvc(args: list[str], project: str) -> str:
    """Run a DVC command in `project`; the venv's bin goes first so its `lmops` is the one run."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    proc = subprocess.run([os.path.join(bin_dir, "dvc"), *args], cwd=project, env=env,
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


@task(name="dvc-repro", timeout_seconds=3 * 3600, task_run_name="repro-{stage}")
def repro_stage(stage: str, project: str) -> bool:
    """Reproduce one stage (never its upstream: the flow orders them). True if the stage ran."""
    out = _dvc(["repro", "--single-item", stage], project)
    ran = f"Running stage '{stage}'" in out
    get_run_logger().info("stage %s %s\n%s", stage, "ran" if ran else "was up to date (DVC cache)", out[-3000:])
    return ran


@task(name="dvc-push", retries=3, retry_delay_seconds=10, timeout_seconds=1800)
def push(targets: list[str], project: str) -> str:
    """Push outputs to the default DVC remote (`.dvc/config`); retried, since remotes are networked."""
    return _dvc(["push", *targets], project)
