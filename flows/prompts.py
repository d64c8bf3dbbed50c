"""`lmops-prompts`: the prompt stage through DVC (skipped when unchanged), then its artifacts."""
from __future__ import annotations

from prefect import flow

from tasks.dvc import repro_stage
from tasks.params import validate_params
from tasks.prompts import publish_prompts


@flow(name="lmops-prompts", log_prints=True)
def prompts(project: str = ".") -> dict:
    validate_params(project)
    ran = repro_stage("prompts", project)
    metrics = publish_prompts(project)
    print(f"prompts stage {'ran' if ran else 'was up to date'}: {metrics}")
    return metrics


if __name__ == "__main__":
    prompts()
