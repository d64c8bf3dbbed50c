"""One monitoring step, Prefect-free: a window of logs -> features -> Evidently report -> record.

The flow (`flows/monitor.py`) calls these in order and adds artifacts and the drift event.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from lmops.io import read_json, write_json
from lmops.monitor.logs import Window, read_window

log = logging.getLogger("lmops.monitor")
REFERENCE = "reference_features.parquet"


class TooFewRows(Exception):
    """A window too small to judge: quarantined (recorded, not scored)."""


def load_window(log_dir: Path, window: Window, min_rows: int, state_dir: Path) -> pd.DataFrame:
    rows = read_window(log_dir, window)
    if len(rows) < min_rows:
        msg = f"window {window.start}..{window.end} quarantined: {len(rows)} rows < min_rows {min_rows}"
        log.warning(msg)
        with (state_dir / "quarantine.jsonl").open("a") as fh:
            fh.write(json.dumps({**window.as_dict(), "rows": len(rows), "reason": msg}) + "\n")
        raise TooFewRows(msg)
    return rows


def reference_features(state_dir: Path, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """The reference window's features: saved when `frame` is given, else read back."""
    path = state_dir / REFERENCE
    if frame is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
        return frame
    if not path.exists():
        raise FileNotFoundError(f"no reference features at {path}: run the monitor once on a clean window")
    return pd.read_parquet(path)


def record_window(metrics_path: Path, window: Window, drift_detected: bool, scores: dict, keep: int = 200) -> dict:
    """Append the window to `metrics/drift.json` (the metrics contract's `windows` list)."""
    data = read_json(metrics_path) if metrics_path.exists() else {"windows": []}
    entry = {**window.as_dict(), "drift_detected": drift_detected, "scores": scores}
    data["windows"] = (data.get("windows", []) + [entry])[-keep:]
    write_json(metrics_path, data)
    return entry


def should_emit(state_path: Path, now: pd.Timestamp, cooldown_minutes: float) -> bool:
    """Dedup a drift burst: emit only if no event was emitted within the cooldown (state in a file,
    so it holds across the scheduled runs, each a separate process)."""
    state = read_json(state_path) if state_path.exists() else {}
    last = state.get("last_event")
    if last and now - pd.Timestamp(last) < pd.Timedelta(minutes=cooldown_minutes):
        log.info("drift event suppressed: last event at %s is within the %s min cooldown", last, cooldown_minutes)
        return False
    write_json(state_path, {**state, "last_event": now.isoformat()})
    return True
