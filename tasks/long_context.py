"""Prefect tasks of the long-context stage: publish its markdown table and heatmaps as artifacts.
The stage itself runs through `dvc repro` (tasks/dvc.py), like every reproducible stage."""
from __future__ import annotations

import base64
from pathlib import Path

from prefect import task
from prefect.artifacts import create_image_artifact, create_markdown_artifact

from lmops.io import InputError
from lmops.layout import LONGCTX_PLOTS as PLOTS
from lmops.layout import LONGCTX_REPORT as REPORT


def data_url(png: Path) -> str:
    """An inline image URL: the artifact shows the PNG without a web server for the plots folder."""
    if not png.is_file():
        raise InputError(f"{png} is missing: run `lmops stage long_context`")
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


@task(name="long_context-artifacts", retries=2, retry_delay_seconds=5)
def publish_long_context(project: str) -> list[str]:
    """The markdown table and one image artifact per PNG (heatmaps, perplexity by position)."""
    root = Path(project)
    if not (root / REPORT).is_file():
        raise InputError(f"{root / REPORT} is missing: run `lmops stage long_context`")
    keys = ["long-context-table"]
    create_markdown_artifact((root / REPORT).read_text(), key=keys[0], description="long-context methods compared")
    for png in sorted((root / PLOTS).glob("*.png")):
        key = "long-context-" + png.stem.replace("_", "-")
        create_image_artifact(data_url(png), key=key, description=f"long context: {png.stem}")
        keys.append(key)
    return keys
