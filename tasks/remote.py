"""Prefect tasks that move the pipeline's outputs to and from the DVC remote (`lmops.remote`:
bounded retries inside, one-line RemoteError naming the remote when it gives up)."""
from __future__ import annotations

from prefect import task
from prefect.logging import get_run_logger

from lmops import remote


@task(name="dvc-push-all", timeout_seconds=3600)
def push_outputs(project: str, targets: list[str] | None = None) -> str:
    """Every output in dvc.lock (data, base model, quantized variants, index, ...) and every `.dvc`
    file (registered model versions) to the default remote: what another clone needs to restore the run."""
    out = remote.push(project, targets)
    get_run_logger().info("pushed to %s:\n%s", remote.remote_of(project), out.strip()[-2000:])
    return out


@task(name="dvc-pull", timeout_seconds=3600)
def pull_outputs(project: str, targets: list[str] | None = None) -> str:
    out = remote.pull(project, targets)
    get_run_logger().info("pulled from %s:\n%s", remote.remote_of(project), out.strip()[-2000:])
    return out
