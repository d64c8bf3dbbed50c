"""Windows of the production log store (`lmops.serve.logstore`, written by `lmops serve`).

`read_logs` moves a corrupt Parquet part to `<log_dir>/quarantine/` with a warning and reads the
rest, so one bad file never stops the monitor. Only answered requests (status 200) are judged.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


def utc(ts) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@dataclass(frozen=True)
class Window:
    start: pd.Timestamp
    end: pd.Timestamp

    @classmethod
    def of(cls, start, end) -> "Window":
        return cls(utc(start), utc(end))

    def as_dict(self) -> dict:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def read_window(log_dir, window: Window) -> pd.DataFrame:
    """Answered requests with start <= timestamp < end."""
    from lmops.serve.logstore import read_logs

    rows = read_logs(log_dir, window.start, window.end)
    return rows[rows["status"] == 200].reset_index(drop=True)
