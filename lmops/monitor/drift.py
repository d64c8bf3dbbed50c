"""One Evidently `Report` per window: reference vs current, with tests from the `drift.monitor` params.

Every registered drift descriptor (`lmops.monitor.descriptor`, built-ins in `lmops/monitor/descriptors/`)
whose columns both frames have becomes one metric of the report, named by its score and carrying
`lt(thresholds[kind])`: every score is "higher = more drift". Kinds listed in `warn_only` fail as
Evidently warnings, the others as failed (critical) tests: drift. (A reference saved before a
descriptor was registered lacks its columns: that score is left out, with a warning, until the next
reference.)
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lmops.errors import LmopsError
from lmops.io import write_text
from lmops.monitor.descriptor import TEXT_COLUMNS, Descriptor, descriptors
from lmops.params import MonitorParams

log = logging.getLogger("lmops.monitor")


@dataclass
class WindowResult:
    scores: dict[str, float]
    failed: list[str]  # critical tests that failed: drift
    warnings: list[str] = field(default_factory=list)  # non-critical tests that failed
    html: str = ""

    @property
    def drift_detected(self) -> bool:
        return bool(self.failed)


def _dataset(frame: pd.DataFrame, scored: list[Descriptor]):
    from evidently import DataDefinition, Dataset

    embeddings = {d.embeddings[0]: d.embedding_columns(list(frame.columns)) for d in scored if d.embeddings}
    definition = DataDefinition(text_columns=list(TEXT_COLUMNS), numerical_columns=[c for d in scored for c in d.numerical],
                                embeddings=embeddings or None)
    return Dataset.from_pandas(frame, data_definition=definition,
                               descriptors=[d.evidently() for d in scored if d.evidently is not None])


def _metrics(p: MonitorParams, scored: list[Descriptor]) -> dict[str, object]:
    return {d.name: d.metric(p.thresholds[d.kind], d.kind not in p.warn_only) for d in scored}


@contextlib.contextmanager
def _fast_embedding_plot():
    """Evidently's embedding-drift widget runs t-SNE (about 30 s per window here) only to draw its
    2-D plot; a PCA projection draws the same kind of plot in milliseconds. The score is unchanged."""
    from evidently.legacy.metrics.data_drift import embeddings_drift
    from sklearn.decomposition import PCA

    class _PCA2D:
        def __init__(self, n_components: int = 2, **_):
            self.pca = PCA(n_components=n_components, random_state=0)

        def fit_transform(self, x):
            return self.pca.fit_transform(x)

    original = embeddings_drift.TSNE
    embeddings_drift.TSNE = _PCA2D
    try:
        yield
    finally:
        embeddings_drift.TSNE = original


class UnusableWindow(LmopsError):
    """A feature frame with no row left to judge once its degenerate rows are left out."""


def usable(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    """`frame` as the report can take it: text columns present and strings ("" for missing or null,
    with a warning), rows with NaN or infinite numeric features left out (named in a warning)."""
    from lmops.monitor.features import drop_degenerate

    missing = [c for c in TEXT_COLUMNS if c not in frame.columns]
    if missing:
        log.warning("%s have missing columns %s: judged as empty text", what, missing)
    frame = frame.assign(**{c: frame[c].fillna("").astype(str) if c in frame.columns else "" for c in TEXT_COLUMNS})
    frame = drop_degenerate(frame.reset_index(drop=True), what)
    if frame.empty:
        raise UnusableWindow(f"{what} have no row left to judge")
    return frame


def run_report(reference: pd.DataFrame, current: pd.DataFrame, p: MonitorParams) -> WindowResult:
    """Compare two feature frames (`features.feature_frame`); scores, failed tests and the HTML.
    Degenerate rows of either frame are handled by `usable` (empty texts are judged as they are)."""
    from evidently import Report

    reference, current = usable(reference, "the reference features"), usable(current, "the window's features")
    scored = []
    for d in descriptors():
        if d.present(list(current.columns)):
            if d.present(list(reference.columns)):
                scored.append(d)
            else:  # a reference saved before the descriptor existed: scored once a new reference is taken
                log.warning("drift score %r left out: the reference features lack its columns (re-baseline to add "
                            "it: delete the monitor's state directory)", d.name)
    for d in scored:
        if d.prepare is not None:
            reference, current = d.prepare(reference, current)
    metrics = _metrics(p, scored)
    with _fast_embedding_plot():
        snapshot = Report(list(metrics.values())).run(_dataset(current, scored), _dataset(reference, scored))
    result = snapshot.dict()
    by_id = {m["id"]: m for m in result["metrics"]}
    names = {m["metric_name"]: name for name, m in zip(metrics, result["metrics"])}
    scores = {name: round(float(m["value"]), 4) for name, m in zip(metrics, result["metrics"])}
    failed, warnings = [], []
    for t in result["tests"]:
        name = names.get(by_id[t["metric_config"]["metric_id"]]["metric_name"], t["name"])
        if t["status"] == "FAIL":
            failed.append(name)
        elif t["status"] == "WARNING":
            warnings.append(name)
    scores["rows"] = len(current)
    return WindowResult(scores=scores, failed=failed, warnings=warnings, html=snapshot.get_html_str(as_iframe=False))


def save_html(result: WindowResult, path: Path) -> Path:
    write_text(path, result.html)
    return path
