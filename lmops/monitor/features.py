"""A window's feature frame: the logged text plus every registered drift descriptor's columns
(`lmops.monitor.descriptor`; the built-in ones are in `lmops/monitor/descriptors/`)."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from lmops.monitor.descriptor import TEXT_COLUMNS, FeatureContext, descriptors, text

log = logging.getLogger("lmops.monitor")


def feature_frame(logs: pd.DataFrame, context: FeatureContext = FeatureContext()) -> pd.DataFrame:
    """The monitored columns of a window: `prompt`, `response`, then each descriptor's computed
    columns (a descriptor that cannot be computed in this context, e.g. unknown terms without a
    training corpus, is left out, and so is its score).

    Degenerate rows never fail the window: a missing or null text is "" (an empty text is real
    traffic, and every text descriptor handles it); a log frame missing a text column gets "" with a
    warning, and a descriptor whose input column is missing is left out with a warning; rows whose
    numeric features are not finite (NaN latency or token count) are left out, named in a warning."""
    logs = logs.reset_index(drop=True)
    missing = [c for c in TEXT_COLUMNS if c not in logs.columns]
    if missing:
        log.warning("the window's logs have missing columns %s: monitored as empty text", missing)
        logs = logs.assign(**{c: "" for c in missing})
    parts = [pd.DataFrame({c: text(logs, c) for c in TEXT_COLUMNS})]
    for d in descriptors():
        if d.compute is None:
            continue
        try:
            columns = d.compute(logs, context)
        except KeyError as err:
            log.warning("drift score %r left out: the window's logs have missing columns (%s)", d.name, err)
            continue
        if columns is not None:
            parts.append(pd.DataFrame(columns).reset_index(drop=True))
    frame = pd.concat(parts, axis=1)
    ids = logs["request_id"].astype(str) if "request_id" in logs.columns else pd.Series(logs.index.astype(str))
    return drop_degenerate(frame, "the window's features", ids)


def degenerate_rows(frame: pd.DataFrame) -> pd.Series:
    """Rows whose numeric features are not all finite (a boolean mask)."""
    numeric = frame.drop(columns=[c for c in TEXT_COLUMNS if c in frame.columns]).apply(pd.to_numeric, errors="coerce")
    if numeric.shape[1] == 0:
        return pd.Series(False, index=frame.index)
    return ~np.isfinite(numeric.to_numpy(dtype=float)).all(axis=1)


def drop_degenerate(frame: pd.DataFrame, what: str, ids: pd.Series | None = None) -> pd.DataFrame:
    """`frame` without its degenerate rows, with one warning naming them (quarantined from the report)."""
    bad = np.asarray(degenerate_rows(frame))
    if not bad.any():
        return frame
    named = list((ids if ids is not None else pd.Series(frame.index.astype(str)))[bad])[:20]
    log.warning("%d degenerate rows (NaN or infinite numeric features) left out of %s: %s%s", int(bad.sum()), what,
                ", ".join(map(str, named)), " ..." if bad.sum() > len(named) else "")
    return frame[~bad].reset_index(drop=True)


def window_features(logs: pd.DataFrame, corpus_dir: str | Path, reference_prompts: Iterable[str]) -> pd.DataFrame:
    """The monitoring flow's features of a window: unknown terms against the training corpus and the
    reference window's prompts (the window's own prompts when it becomes the reference)."""
    return feature_frame(logs, FeatureContext(str(corpus_dir), tuple(reference_prompts)))
