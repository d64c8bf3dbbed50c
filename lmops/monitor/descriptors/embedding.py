"""`embedding`: how far the mean MiniLM embedding of the prompts moved (what users ask is what drifts).

The score is the Euclidean distance between the mean embeddings of the reference and current
prompts, in units of its noise floor: with no drift, E|mean_ref - mean_cur|^2 = tr(Cov_ref) *
(1/n_ref + 1/n_cur), so the embeddings are divided by the root of that before Evidently measures the
distance, and ~1.0 means "as far apart as two samples of the same traffic". The raw distance's floor
moves with the window size and the traffic mix (0.047 to 0.070 at 500 rows here), which no fixed
threshold survives. (A domain classifier's ROC AUC was tried and was noisier.)
Embeddings: all-MiniLM-L6-v2 through `lmops.embed`, stored as the `emb_*` feature columns.
"""
from __future__ import annotations

from lmops.monitor.descriptor import Descriptor, Kind, lt_test, register, register_kind, text

PREFIX = "emb_"  # feature columns emb_0 .. emb_383 (saved in the reference features: keep the name)
NAME = "minilm"  # the Evidently embedding set


def _columns(logs, ctx):
    import pandas as pd

    from lmops import embed

    emb = embed.embed(text(logs, "prompt"))
    return pd.DataFrame(emb, columns=[f"{PREFIX}{j}" for j in range(emb.shape[1])])


def noise_scaled(reference, current):
    """Both frames with `emb_*` divided by the no-drift expected distance of their means."""
    cols = [c for c in reference.columns if c.startswith(PREFIX)]
    ref = reference[cols].to_numpy()
    spread = float(((ref - ref.mean(axis=0)) ** 2).sum(axis=1).mean())  # tr(Cov_ref)
    floor = (spread * (1 / len(reference) + 1 / len(current))) ** 0.5
    scaled = []
    for frame in (reference, current):
        frame = frame.copy()
        frame[cols] = frame[cols].to_numpy() / max(floor, 1e-12)
        scaled.append(frame)
    return scaled[0], scaled[1]


def _metric(threshold: float, critical: bool):
    from evidently.metrics import EmbeddingsDrift
    from evidently.metrics.embeddings import DistanceDriftMethod

    return EmbeddingsDrift(embeddings_name=NAME, tests=lt_test(threshold, critical),
                           drift_method=DistanceDriftMethod(threshold=threshold))


register_kind(Kind("embedding", threshold=2.0,
                   doc="distance between mean MiniLM prompt embeddings, in units of its no-drift noise floor"))
register(Descriptor("embedding", "embedding", _metric, compute=_columns, embeddings=(NAME, PREFIX),
                    prepare=noise_scaled))
