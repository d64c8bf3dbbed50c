"""Prefect tasks of the quantization area: publish the grid's results (the stage itself runs through
`tasks.dvc.repro_stage`, so a flow run and `dvc repro` share one cache)."""
from __future__ import annotations

import base64
from pathlib import Path

from prefect import task
from prefect.artifacts import create_image_artifact, create_markdown_artifact, create_table_artifact

from lmops.io import read_json
from lmops.layout import QUANT_METRICS as METRICS
from lmops.layout import QUANT_PNG as PLOT_PNG
from lmops.quant.report import markdown_table


@task(name="publish-quantization")
def publish_quantization(project: str) -> str:
    """The table (markdown and rows) and the frontier plot as Prefect artifacts; returns the table."""
    metrics = read_json(Path(project) / METRICS)
    table = markdown_table(metrics)
    create_markdown_artifact(table, key="quantization-table", description="quantization grid, one row per scheme")
    create_table_artifact([{"scheme": n, **m} for n, m in metrics["schemes"].items()], key="quantization-metrics",
                          description="metrics/quantization.json")
    png = (Path(project) / PLOT_PNG).read_bytes()  # inlined: the UI needs a URL, and a local path is none
    create_image_artifact(f"data:image/png;base64,{base64.b64encode(png).decode()}", key="quantization-frontier",
                          description="inference memory vs test perplexity, Pareto frontier in red")
    return table
