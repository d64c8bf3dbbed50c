from __future__ import annotations

from pathlib import Path

from prefect import task

from lmops.params import Params, load_params


@task(name="validate-params")
def validate_params(project: str, params: str = "params.yaml") -> Params:
    """Fail the flow on a bad params file before any stage starts."""
    return load_params(Path(project) / params)
