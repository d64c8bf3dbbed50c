"""Serve the lmops deployments from this process (no work pool needed): `python -m deployments.serve`."""
from __future__ import annotations

from pathlib import Path

from prefect import serve

from flows.pipeline import lmops_pipeline

PROJECT = str(Path(__file__).resolve().parent.parent)
WEEKLY = "0 3 * * 1"  # Mondays 03:00 UTC, the same schedule as prefect.yaml


def deployments() -> list:
    return [lmops_pipeline.to_deployment(name="weekly", cron=WEEKLY, parameters={"project": PROJECT})]


if __name__ == "__main__":
    serve(*deployments())
