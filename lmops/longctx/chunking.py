"""Token chunking with overlap: every chunk fits the model's context, and a fact cut by one chunk
boundary appears whole in the next chunk when the overlap is at least as long as the fact."""
from __future__ import annotations

from dataclasses import dataclass

from lmops.errors import LmopsError


class ChunkingError(LmopsError, ValueError):
    """Chunk settings that cannot work (a chunk longer than the context, or overlap >= chunk size)."""


@dataclass(frozen=True)
class ChunkConfig:
    size: int  # tokens per chunk
    overlap: int  # tokens shared by consecutive chunks
    context: int | None = None  # the model's context; a chunk must fit in it

    def __post_init__(self):
        if self.size < 1:
            raise ChunkingError(f"chunk size must be >= 1 token, got {self.size}")
        if self.context is not None and self.size > self.context:
            raise ChunkingError(f"chunk size {self.size} is larger than the model context {self.context} tokens")
        if not 0 <= self.overlap < self.size:
            raise ChunkingError(f"chunk overlap must be >= 0 and smaller than the chunk size {self.size}, "
                                f"got {self.overlap}")


def chunk_ids(ids: list[int], cfg: ChunkConfig) -> list[list[int]]:
    """Windows of `cfg.size` tokens, each starting `size - overlap` after the last; the last window
    ends at the end of `ids` (it is not padded), so no token is lost."""
    if len(ids) <= cfg.size:
        return [list(ids)] if ids else []
    step = cfg.size - cfg.overlap
    out = []
    for start in range(0, len(ids), step):
        out.append(ids[start:start + cfg.size])
        if start + cfg.size >= len(ids):
            break
    return out


def chunk_text(tokenizer, text: str, cfg: ChunkConfig) -> list[str]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [tokenizer.decode(c) for c in chunk_ids(ids, cfg)]
