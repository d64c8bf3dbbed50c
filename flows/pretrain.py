"""`lmops-pretrain`: train the base checkpoint from scratch (long; on a GPU when one is there)."""
from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from lmops.stages.train import pretrain as pretrain_checkpoint
from tasks.dvc import repro_stage
from tasks.params import validate_params


@task(name="pretrain", timeout_seconds=12 * 3600)
def train_checkpoint(project: str) -> dict:
    from lmops.params import load_params

    return pretrain_checkpoint(load_params(Path(project) / "params.yaml"), Path(project))


@flow(name="lmops-pretrain", log_prints=True)
def pretrain(project: str = ".") -> dict:
    validate_params(project)
    repro_stage("data", project)
    metrics = train_checkpoint(project)
    print(f"checkpoint metrics: {metrics}")
    return metrics
