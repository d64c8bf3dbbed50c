"""Reading windows of the production log store, with quarantine of what cannot be read.

The server (`lmops serve`) appends Parquet files to a log directory; one row per request. The columns
the monitor needs are `LOG_COLUMNS`. A file that does not parse, or lacks a column, is moved to
`<log_dir>/quarantine/` with a log line naming it, and the window is read without it.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

log = logging.getLogger("lmops.monitor")

# What every log row must have (the server logs more: token counts, prompt version ...).
LOG_COLUMNS = ["ts", "prompt", "response", "latency_ms", "model_version"]
QUARANTINE = "quarantine"


def _utc(ts) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def quarantine(path: Path, log_dir: Path, reason: str) -> Path:
    """Move a bad log file aside (never delete: it is evidence) and say so."""
    dest = log_dir / QUARANTINE / path.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), dest)
    log.warning("quarantined log file %s -> %s: %s", path, dest, reason)
    return dest


def read_log_file(path: Path) -> pd.DataFrame:
    df = pd.read_parquet(path)
    missing = [c for c in LOG_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"missing columns {missing}")
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    return df


def log_files(log_dir: Path) -> list[Path]:
    return sorted(p for p in Path(log_dir).rglob("*.parquet") if QUARANTINE not in p.parts)


def read_window(log_dir: str | Path, start, end) -> pd.DataFrame:
    """Rows with start <= ts < end from every readable file; unreadable files are quarantined."""
    log_dir, start, end = Path(log_dir), _utc(start), _utc(end)
    frames = []
    for path in log_files(log_dir):
        try:
            df = read_log_file(path)
        except Exception as err:  # any parse failure: pyarrow raises several types
            quarantine(path, log_dir, f"{type(err).__name__}: {err}")
            continue
        frames.append(df[(df["ts"] >= start) & (df["ts"] < end)])
    if not frames:
        return pd.DataFrame(columns=LOG_COLUMNS)
    return pd.concat(frames, ignore_index=True).sort_values("ts", ignore_index=True)


def append_log(log_dir: str | Path, rows: list[dict], name: str | None = None) -> Path:
    """Write rows as one new Parquet file (append-only: files are never rewritten)."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    name = name or f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}.parquet"
    tmp = log_dir / f".{name}.tmp"
    pd.DataFrame(rows).to_parquet(tmp, index=False)
    tmp.replace(log_dir / name)
    return log_dir / name


@dataclass(frozen=True)
class Window:
    start: pd.Timestamp
    end: pd.Timestamp

    def as_dict(self) -> dict:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def windows(start, end, minutes: float) -> list[Window]:
    """Consecutive [start, end) windows of `minutes` each."""
    start, end, step = _utc(start), _utc(end), pd.Timedelta(minutes=minutes)
    out = []
    while start + step <= end:
        out.append(Window(start, start + step))
        start += step
    return out
