"""One Evidently `Report` per window: reference vs current, with tests from the `drift.monitor` params.

Scores (all "higher = more drift", so every test is `lt(threshold)`):
- text descriptors of the prompt and response, computed by Evidently's offline descriptors (length,
  word count, non-letter share), each as a normed Wasserstein distance to the reference;
- `embedding`: Euclidean distance between the mean MiniLM embeddings of the reference and current
  prompts, in units of its noise floor: with no drift, E|mean_ref - mean_cur|^2 = tr(Cov_ref) *
  (1/n_ref + 1/n_cur), so the embeddings are divided by the root of that before Evidently measures
  the distance, and ~1.0 means "as far apart as two samples of the same traffic". The raw distance's
  floor moves with the window size and the traffic mix (0.047 to 0.070 at 500 rows here), which no
  fixed threshold survives. (A domain classifier's ROC AUC was tried and was noisier.)
- `prompt_unknown_terms`: the share of requests using terms absent from the training texts
  (`vocab.py`), tested with `MeanValue`: the sharpest signal of a topic, style or domain shift here;
- quality proxies: response log-likelihood under the model, output length and latency, as Wasserstein
  distances. Latency is a warning by default (not critical): on a shared CPU it drifts with the load.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lmops.io import write_text
from lmops.params import MonitorParams

# score name -> (column, kind); descriptor columns are created by Evidently from the text columns.
TEXT_SCORES = {
    "prompt_length": ("prompt", "TextLength"), "prompt_words": ("prompt", "WordCount"),
    "prompt_nonletter": ("prompt", "NonLetterCharacterPercentage"),
    "response_length": ("response", "TextLength"), "response_nonletter": ("response", "NonLetterCharacterPercentage"),
}
QUALITY_SCORES = {"response_loglik": "quality", "output_tokens": "quality", "latency_ms": "latency"}


@dataclass
class WindowResult:
    scores: dict[str, float]
    failed: list[str]  # critical tests that failed: drift
    warnings: list[str] = field(default_factory=list)  # non-critical tests that failed
    html: str = ""

    @property
    def drift_detected(self) -> bool:
        return bool(self.failed)


def _descriptors():
    from evidently import descriptors as d

    return [getattr(d, kind)(col, alias=name) for name, (col, kind) in TEXT_SCORES.items()]


def _dataset(frame: pd.DataFrame):
    from evidently import DataDefinition, Dataset

    emb = [c for c in frame.columns if c.startswith("emb_")]
    numeric = [c for c in [*QUALITY_SCORES, "prompt_unknown_terms"] if c in frame.columns]
    definition = DataDefinition(text_columns=["prompt", "response"], numerical_columns=numeric,
                                embeddings={"minilm": emb})
    return Dataset.from_pandas(frame, data_definition=definition, descriptors=_descriptors())


def _metrics(p: MonitorParams, columns: list[str]) -> dict[str, object]:
    from evidently.metrics import EmbeddingsDrift, MeanValue, ValueDrift
    from evidently.metrics.embeddings import DistanceDriftMethod
    from evidently.tests import lt

    def test(kind: str):
        return [lt(p.thresholds[kind], is_critical=kind not in p.warn_only)]

    metrics: dict[str, object] = {name: ValueDrift(column=name, method="wasserstein", tests=test("text"))
                                  for name in TEXT_SCORES}
    metrics |= {name: ValueDrift(column=name, method="wasserstein", tests=test(kind))
                for name, kind in QUALITY_SCORES.items() if name in columns}
    if "prompt_unknown_terms" in columns:
        metrics["prompt_unknown_terms"] = MeanValue(column="prompt_unknown_terms", tests=test("unknown"))
    metrics["embedding"] = EmbeddingsDrift(embeddings_name="minilm", tests=test("embedding"),
                                           drift_method=DistanceDriftMethod(threshold=p.thresholds["embedding"]))
    return metrics


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


def noise_scaled(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both frames with `emb_*` divided by the no-drift expected distance of their means."""
    cols = [c for c in reference.columns if c.startswith("emb_")]
    ref = reference[cols].to_numpy()
    spread = float(((ref - ref.mean(axis=0)) ** 2).sum(axis=1).mean())  # tr(Cov_ref)
    floor = (spread * (1 / len(reference) + 1 / len(current))) ** 0.5
    scaled = []
    for frame in (reference, current):
        frame = frame.copy()
        frame[cols] = frame[cols].to_numpy() / max(floor, 1e-12)
        scaled.append(frame)
    return scaled[0], scaled[1]


def run_report(reference: pd.DataFrame, current: pd.DataFrame, p: MonitorParams) -> WindowResult:
    """Compare two feature frames (`features.feature_frame`); scores, failed tests and the HTML."""
    from evidently import Report

    reference, current = noise_scaled(reference, current)
    metrics = _metrics(p, list(current.columns))
    with _fast_embedding_plot():
        snapshot = Report(list(metrics.values())).run(_dataset(current), _dataset(reference))
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
