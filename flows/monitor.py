"""`lmops-monitor`: one window of production logs against the reference, on a schedule.

Drift (a critical Evidently test failing) emits `lmops.drift.detected`; the retraining deployment's
trigger listens for it. A cooldown (`drift.retrain.cooldown_minutes`) makes one burst one event.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
from prefect import flow
from prefect.logging import get_run_logger

from lmops.monitor.logs import Window
from tasks.monitor import drift_report, emit_drift, features, load_window
from tasks.params import validate_params


@flow(name="lmops-monitor", log_prints=True)
def monitor(project: str = ".", log_dir: str = "logs/production", state_dir: str = ".lmops/monitor",
            model_dir: str | None = None, start: datetime | None = None, end: datetime | None = None,
            metrics_path: str = "metrics/drift.json") -> dict:
    """Judge the window [start, end) (default: the last `window_minutes` up to now)."""
    from lmops.monitor.window import TooFewRows, record_window, reference_features, should_emit

    root = Path(project)
    p = validate_params(project).drift
    end = pd.Timestamp(end or datetime.now(timezone.utc))
    start = pd.Timestamp(start) if start else end - timedelta(minutes=p.monitor.window_minutes)
    window = Window(start.tz_convert("UTC") if start.tzinfo else start.tz_localize("UTC"),
                    end.tz_convert("UTC") if end.tzinfo else end.tz_localize("UTC"))
    state = root / state_dir
    state.mkdir(parents=True, exist_ok=True)
    try:
        logs = load_window(str(root / log_dir), window, p.monitor.min_rows, str(state))
    except TooFewRows as err:
        get_run_logger().warning("%s; the monitor continues with the next window", err)
        return {**window.as_dict(), "quarantined": str(err)}
    reference = reference_features(state, None, None, None)
    current = features(logs, str(root / model_dir) if model_dir else None)
    html = state / "reports" / f"{window.start:%Y%m%dT%H%M%S}.html"
    report = drift_report(reference, current, p.monitor, str(html))
    entry = record_window(root / metrics_path, window, report["drift_detected"], report["scores"])
    if report["drift_detected"] and should_emit(state / "events.json", pd.Timestamp.now(tz="UTC"),
                                                 p.retrain.cooldown_minutes):
        entry["event_id"] = emit_drift(window, report, project)
        print(f"drift detected in {window.start}..{window.end}: {report['failed']} -> event {entry['event_id']}")
    return {**entry, "failed": report["failed"]}


if __name__ == "__main__":
    monitor()
