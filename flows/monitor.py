"""`lmops-monitor`: one window of production logs against the reference, on a schedule.

Drift (a critical Evidently test failing) emits `lmops.drift.detected`; the retraining deployment's
trigger listens for it. A cooldown (`drift.retrain.cooldown_minutes`) makes one burst one event.
The first window a fresh monitor sees becomes its reference (delete `<state_dir>` to re-baseline), and
after a promotion the first full window served by the new champion replaces it
(`lmops.monitor.window.new_reference_reason`): handled drift stops alarming, a new shift still does.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from prefect import flow
from prefect.logging import get_run_logger

from lmops.layout import MONITOR_STATE, MONITOR_WINDOWS, PRODUCTION_LOGS
from lmops.monitor.logs import Window
from tasks.monitor import drift_report, emit_drift, features, load_window
from tasks.params import validate_params


@flow(name="lmops-monitor", log_prints=True)
def monitor(project: str = ".", log_dir: str = str(PRODUCTION_LOGS), state_dir: str = str(MONITOR_STATE),
            start: datetime | None = None, end: datetime | None = None, event_resource: str = "lmops.monitor") -> dict:
    """Judge the window [start, end) (default: the last `window_minutes` up to now). Every judged
    window is appended to `<state_dir>/windows.json` (monitor state, not a DVC metric); a drift event's
    resource is `<event_resource>.<project directory name>`."""
    from lmops.monitor.window import (
        champion_version,
        new_reference_reason,
        record_window,
        reference_features,
        should_emit,
    )

    root = Path(project)
    params = validate_params(project)
    p = params.drift
    end = pd.Timestamp(end or datetime.now(UTC))
    window = Window.of(pd.Timestamp(start) if start else end - timedelta(minutes=p.monitor.window_minutes), end)
    state = root / state_dir
    state.mkdir(parents=True, exist_ok=True)
    logs = load_window(str(root / log_dir), window, p.monitor.min_rows, str(state))
    if logs is None:
        get_run_logger().warning("window %s..%s quarantined (too few rows); the monitor continues with the "
                                 "next window", window.start, window.end)
        return {**window.as_dict(), "quarantined": True}
    corpus = str(root / "data/corpus")
    champion = champion_version(root, params.serve)  # the reference follows it
    reason = new_reference_reason(state, logs, champion)
    if reason:
        reference_features(state, features(logs, corpus, logs["prompt"].tolist()),
                           {"model_version": champion, **window.as_dict(), "reason": reason})
        print(f"window {window.start}..{window.end} ({len(logs)} rows) is now the reference: {reason}")
        return {**window.as_dict(), "reference": True, "reason": reason}
    reference = reference_features(state)
    current = features(logs, corpus, reference["prompt"].tolist())
    html = state / "reports" / f"{window.start:%Y%m%dT%H%M%S}.html"
    report = drift_report(reference, current, p.monitor, str(html))
    entry = record_window(state / MONITOR_WINDOWS.name, window, report["drift_detected"], report["scores"])
    if report["drift_detected"] and should_emit(state / "events.json", pd.Timestamp.now(tz="UTC"),
                                                 p.retrain.cooldown_minutes):
        entry["event_id"] = emit_drift(window, report, project, event_resource)
        print(f"drift detected in {window.start}..{window.end}: {report['failed']} -> event {entry['event_id']}")
    return {**entry, "failed": report["failed"], "report": str(html)}


if __name__ == "__main__":
    monitor()
