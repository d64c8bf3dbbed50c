from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from lmops.report import collect_metrics, markdown_summary, metric_rows, text_summary


@task(name="publish-report")
def publish_report(project: str, ran: dict[str, bool]) -> str:
    """Publish the run's metrics to the Prefect UI and return a plain-text summary."""
    metrics = collect_metrics(project)
    create_markdown_artifact(markdown_summary(metrics, ran), key="lmops-summary", description="lmops run summary")
    create_table_artifact(metric_rows(metrics), key="lmops-metrics", description="every metrics/*.json value")
    return text_summary(metrics, ran)
