"""`lmops-quantize`: reproduce the `quantize` stage through DVC (skipped when nothing changed) and
publish its table and frontier plot as artifacts."""
from __future__ import annotations

from prefect import flow

from tasks.dvc import repro_stage
from tasks.params import validate_params
from tasks.quantize import publish_quantization


@flow(name="lmops-quantize", log_prints=True)
def quantize(project: str = ".") -> str:
    validate_params(project)
    repro_stage("quantize", project)
    table = publish_quantization(project)
    print(table)
    return table


if __name__ == "__main__":
    quantize()
