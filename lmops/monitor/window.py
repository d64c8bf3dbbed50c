"""One monitoring step, Prefect-free: a window of logs -> features -> Evidently report -> record.

The flow (`flows/monitor.py`) calls these in order and adds artifacts and the drift event.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from lmops.errors import LmopsError
from lmops.io import read_json, write_json
from lmops.monitor.logs import Window, read_window

log = logging.getLogger("lmops.monitor")
REFERENCE = "reference_features.parquet"
REFERENCE_META = "reference.json"  # whose traffic the reference is: {"model_version", "start", "end", "reason"}


class TooFewRows(LmopsError):
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


def reference_features(state_dir: Path, frame: pd.DataFrame | None = None, meta: dict | None = None) -> pd.DataFrame:
    """The reference window's features: saved (with `meta`: whose traffic it is) when `frame` is
    given, else read back."""
    path = state_dir / REFERENCE
    if frame is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(path)
        write_json(state_dir / REFERENCE_META, meta or {})
        return frame
    if not path.exists():
        raise FileNotFoundError(f"no reference features at {path}: run the monitor once on a clean window")
    return pd.read_parquet(path)


def champion_version(root: Path, sp) -> str:
    """The version the server is told to serve (`serve.alias` in the registry); "unregistered" when
    it serves its fallback directory, as the logs then say."""
    from lmops.io import InputError
    from lmops.registry import Registry
    from lmops.serve.engine import UNREGISTERED

    try:
        version = Registry(root, sp.registry_store).alias_version(sp.model, sp.alias)
    except InputError as err:  # no git repository: nothing can be registered
        log.debug("no model registry in %s (%s)", root, err)
        version = None
    return version or UNREGISTERED


def reference_problem(state_dir: Path) -> str | None:
    """Why the saved reference cannot serve as one, or None: unreadable, no rows, a missing text
    column, or NaN / infinite numeric features (rows an older monitor saved unchecked). Empty texts are
    not a problem: they are real traffic and every descriptor handles them."""
    from lmops.monitor.descriptor import TEXT_COLUMNS
    from lmops.monitor.features import degenerate_rows

    try:
        frame = pd.read_parquet(state_dir / REFERENCE)
    except Exception as err:  # a torn or foreign file
        return f"it cannot be read ({type(err).__name__}: {err})"
    if frame.empty:
        return "it has no rows"
    missing = [c for c in TEXT_COLUMNS if c not in frame.columns]
    if missing:
        return f"it has missing columns {missing}"
    nulls = [c for c in TEXT_COLUMNS if frame[c].isna().any()]
    if nulls:
        return f"its {nulls} columns have null texts"
    bad = int(degenerate_rows(frame).sum())
    if bad:
        return f"{bad} of its {len(frame)} rows have NaN or infinite numeric features"
    return None


def _set_aside(state_dir: Path) -> Path:
    """Move the reference (and its meta) to `<state_dir>/quarantine/`, never deleting evidence."""
    stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S%f")
    dest = state_dir / "quarantine" / f"{Path(REFERENCE).stem}-{stamp}.parquet"
    dest.parent.mkdir(parents=True, exist_ok=True)
    (state_dir / REFERENCE).replace(dest)
    if (state_dir / REFERENCE_META).exists():
        (state_dir / REFERENCE_META).replace(dest.with_name(f"reference-{stamp}.json"))
    return dest


def new_reference_reason(state_dir: Path, logs: pd.DataFrame, champion: str) -> str | None:
    """Why this window becomes the reference instead of being judged, or None to judge it.

    The reference follows the champion: after a promotion, the first full window served only by the
    new champion is the new normal (its traffic is what the retraining was for), so drift that was
    already handled stops alarming and only a new shift does. Until such a window exists, and for
    windows that straddle the swap, the previous reference stays."""
    if not (state_dir / REFERENCE).exists():
        return "the monitor's first window"
    problem = reference_problem(state_dir)
    if problem:  # a bad reference would fail (or skew) every window judged against it
        dest = _set_aside(state_dir)
        reason = f"the saved reference is unusable: {problem}"
        log.warning("%s; moved to %s and replaced by this window", reason, dest)
        return reason
    meta = read_json(state_dir / REFERENCE_META) if (state_dir / REFERENCE_META).exists() else {}
    if meta.get("model_version") == champion:
        return None
    served_by = set(logs["model_version"].astype(str)) if "model_version" in logs else set()
    if served_by == {champion}:
        return f"first full window served by the champion {champion} (the reference was {meta.get('model_version')})"
    return None


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
