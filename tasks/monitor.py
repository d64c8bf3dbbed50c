"""Prefect tasks of the monitoring flow; each calls one lmops.monitor function."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_link_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from lmops.monitor.logs import Window
from lmops.params import MonitorParams

DRIFT_EVENT = "lmops.drift.detected"


@task(name="load-window", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def load_window(log_dir: str, window: Window, min_rows: int, state_dir: str) -> pd.DataFrame | None:
    """Read the window's logs; a corrupt file is quarantined; a window too small to judge is
    quarantined too and gives None (logged by lmops.monitor, recorded in quarantine.jsonl)."""
    from lmops.monitor.window import TooFewRows
    from lmops.monitor.window import load_window as load

    try:
        return load(Path(log_dir), window, min_rows, Path(state_dir))
    except TooFewRows:
        return None


@task(name="features", cache_policy=NO_CACHE)
def features(logs: pd.DataFrame, corpus_dir: str, reference_prompts: list[str]) -> pd.DataFrame:
    """The window's feature frame: every registered drift descriptor's columns (unknown terms against
    the training corpus and the reference window's prompts)."""
    from lmops.monitor.features import window_features

    return window_features(logs, corpus_dir, reference_prompts)


@task(name="drift-report", cache_policy=NO_CACHE)
def drift_report(reference: pd.DataFrame, current: pd.DataFrame, p: MonitorParams, html_path: str) -> dict:
    """Run the Evidently report, save its HTML, publish link + table artifacts (each score beside its
    threshold: a score passes while it is below the threshold of its kind)."""
    from lmops.monitor.drift import run_report, save_html

    result = run_report(reference, current, p)
    save_html(result, Path(html_path))
    create_link_artifact(Path(html_path).resolve().as_uri(), link_text=f"Evidently drift report {Path(html_path).name}",
                         key="drift-report", description=f"Evidently report for window {Path(html_path).stem}")
    from lmops.monitor.descriptor import descriptors

    kind_of = {d.name: d.kind for d in descriptors()}
    rows = [{"score": k, "value": v, "threshold": p.thresholds.get(kind_of.get(k, ""), ""),
             "kind": kind_of.get(k, ""), "warn_only": kind_of.get(k) in p.warn_only,
             "test": "FAIL" if k in result.failed else "WARN" if k in result.warnings else "pass"}
            for k, v in result.scores.items()]
    create_table_artifact(rows, key="drift-scores", description=f"drift scores, window {Path(html_path).stem}")
    return {"drift_detected": result.drift_detected, "scores": result.scores, "failed": result.failed,
            "warnings": result.warnings}


@task(name="emit-drift-event", cache_policy=NO_CACHE)
def emit_drift(window: Window, report: dict, project: str, resource: str = "lmops.monitor") -> str | None:
    """The event a DeploymentEventTrigger on the retraining deployment listens for (`prefect.yaml`
    matches `lmops.monitor.*`; the scenario's sandbox emits under its own resource prefix)."""
    event = emit_event(event=DRIFT_EVENT, resource={"prefect.resource.id": f"{resource}.{Path(project).resolve().name}"},
                       payload={"window": window.as_dict(), "scores": report["scores"], "failed": report["failed"]})
    return str(event.id) if event else None
