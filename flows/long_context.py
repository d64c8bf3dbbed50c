"""`lmops-long-context`: reproduce the long-context stage through DVC (its upstream stages too, so
a fresh checkout works) and publish its table and heatmaps to the Prefect UI."""
from __future__ import annotations

from prefect import flow

from tasks.dvc import repro_stage
from tasks.long_context import publish_long_context
from tasks.params import validate_params

UPSTREAM = ("data", "train", "evaluate")


@flow(name="lmops-long-context", log_prints=True)
def long_context(project: str = ".", upstream: bool = True) -> dict[str, bool]:
    validate_params(project)
    ran = {stage: repro_stage(stage, project) for stage in (UPSTREAM if upstream else ())}
    ran["long_context"] = repro_stage("long_context", project)
    print(f"published artifacts: {publish_long_context(project)}")
    return ran


if __name__ == "__main__":
    long_context()
