"""A window's feature frame: the logged text plus every registered drift descriptor's columns
(`lmops.monitor.descriptor`; the built-in ones are in `lmops/monitor/descriptors/`)."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from lmops.monitor.descriptor import TEXT_COLUMNS, FeatureContext, descriptors, text


def feature_frame(logs: pd.DataFrame, context: FeatureContext = FeatureContext()) -> pd.DataFrame:
    """The monitored columns of a window: `prompt`, `response`, then each descriptor's computed
    columns (a descriptor that cannot be computed in this context, e.g. unknown terms without a
    training corpus, is left out, and so is its score)."""
    parts = [pd.DataFrame({c: text(logs, c) for c in TEXT_COLUMNS})]
    for d in descriptors():
        if d.compute is None:
            continue
        columns = d.compute(logs, context)
        if columns is not None:
            parts.append(pd.DataFrame(columns).reset_index(drop=True))
    return pd.concat(parts, axis=1)


def window_features(logs: pd.DataFrame, corpus_dir: str | Path, reference_prompts: Iterable[str]) -> pd.DataFrame:
    """The monitoring flow's features of a window: unknown terms against the training corpus and the
    reference window's prompts (the window's own prompts when it becomes the reference)."""
    return feature_frame(logs, FeatureContext(str(corpus_dir), tuple(reference_prompts)))
