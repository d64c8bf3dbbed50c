"""`lmops-pipeline`: the whole DAG as a Prefect flow. Stages run through DVC in `dvc.yaml` order,
so unchanged stages are skipped exactly as `dvc repro` would skip them. Then the closed-loop
scenario (`lmops-scenario`, a subflow on the same Prefect server) writes metrics/drift.json."""
from __future__ import annotations

from prefect import flow

from flows.scenario import scenario as drift_scenario
from lmops.report import pipeline_stages
from tasks.dvc import estimate, push, repro_stage
from tasks.long_context import publish_long_context
from tasks.params import validate_params
from tasks.quantize import publish_quantization
from tasks.remote import push_outputs
from tasks.report import publish_report


@flow(name="lmops-pipeline", log_prints=True)
def lmops_pipeline(project: str = ".", push_data: bool = True, scenario: bool = True) -> dict[str, bool]:
    validate_params(project)
    ran: dict[str, bool] = {}
    stages = pipeline_stages(project)
    if (eta := estimate(project, stages)):
        print(f"stages {', '.join(stages)}: {eta}")
    for i, stage in enumerate(stages, 1):
        ran[stage] = repro_stage(stage, project, position=f"{i}/{len(stages)}")
        if stage == "data" and push_data:
            push(["data"], project)  # version the dataset on the remote before training on it
    if "quantize" in ran:
        publish_quantization(project)
    if "long_context" in ran:
        publish_long_context(project)  # heatmaps and the methods table as image/markdown artifacts
    if scenario:  # not a DVC stage: it runs services (a worker, the model server), so it always runs
        drift_scenario(project=project)
        ran["scenario"] = True
    print(publish_report(project, ran))
    if push_data:  # every output another clone needs to restore this run: `dvc pull` there (docs/scale-out.md)
        push_outputs(project)
    return ran


if __name__ == "__main__":
    lmops_pipeline()
