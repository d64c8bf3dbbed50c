"""Prefect tasks of the prompt stage: publish its results (the stage itself runs through DVC)."""
from __future__ import annotations

import csv
from pathlib import Path

from prefect import task
from prefect.artifacts import create_image_artifact, create_markdown_artifact, create_table_artifact

from lmops.io import InputError, read_json
from lmops.layout import PROMPTS_METRICS as METRICS
from lmops.layout import PROMPTS_REPORT as REPORT
from lmops.layout import PROMPTS_TRAJECTORY as TRAJECTORY


@task(name="prompts-publish", retries=2, retry_delay_seconds=5)
def publish_prompts(project: str) -> dict:
    """The report as markdown, the dev-score trajectory as a table and an image, the metrics as a table."""
    root = Path(project).resolve()
    metrics = read_json(root / METRICS)
    if not (root / REPORT).exists():
        raise InputError(f"{root / REPORT} is missing: run `lmops stage prompts` (or `dvc repro prompts`)")
    create_markdown_artifact((root / REPORT).read_text(), key="prompts-report", description="prompt optimization")
    with (root / TRAJECTORY).open() as fh:
        create_table_artifact(list(csv.DictReader(fh)), key="prompts-trajectory", description="dev score per round")
    create_image_artifact((root / TRAJECTORY).with_suffix(".png").as_uri(), key="prompts-trajectory-plot",
                          description="self-refining loop: dev score per round")
    rows = [{"pattern": group, "metric": k, "value": v} for group, m in metrics.items() for k, v in m.items()]
    create_table_artifact(rows, key="prompts-metrics", description="metrics/prompts.json")
    return metrics
