"""Configs shared by several quantization methods (group sizes, LoRA settings, the KV cache) and the
`Scheme` of the grid. Each method's own config lives in its module under `lmops.quant.methods`.

No torch import here, so params validation and `lmops --help` stay fast."""
from __future__ import annotations

from dataclasses import dataclass

from lmops.errors import QuantError  # noqa: F401  (re-exported: configs raise it)


def check_group(group_size: int) -> None:
    if group_size < 2 or group_size & (group_size - 1):
        raise QuantError(f"group_size must be a power of two >= 2, got {group_size}")


@dataclass(frozen=True)
class KVCacheConfig:
    """Quantized key/value cache in `generate()` (transformers `QuantizedCache`, HQQ backend):
    `bits` per element, one (scale, zero) per `group_size` elements of a token's head vector; the
    last `residual` tokens stay in full precision until they are flushed into the quantized store."""
    bits: int = 8
    group_size: int = 32
    residual: int = 32

    def __post_init__(self):
        if self.bits not in (2, 4, 8):
            raise QuantError(f"KV-cache bits must be 2, 4 or 8, got {self.bits}")
        check_group(self.group_size)
        if self.residual < 1:
            raise QuantError(f"KV-cache residual must be >= 1, got {self.residual}")


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA adapter (peft) and its fine-tune: rank, alpha, optimizer steps and learning rate."""
    rank: int = 8
    alpha: int = 16
    steps: int = 30
    lr: float = 2e-3

    def __post_init__(self):
        if self.rank < 1 or self.alpha < 1 or self.steps < 1 or not 0 < self.lr < 1:
            raise QuantError(f"invalid LoRA settings: {self}")


@dataclass(frozen=True)
class Scheme:
    """One variant of the grid: a weight config plus an optional KV-cache config."""
    name: str
    weights: object
    kv: KVCacheConfig | None = None


EMBEDDING_BITS = (0, 4, 8)  # `embedding_bits` of the weight-only methods; 0: embedding and LM head stay float


def check_embedding_bits(bits: int) -> None:
    """Params-time check of `embedding_bits` (kept here, with the other config checks, so that params
    validation never loads the quantization code in lmops.quant.embedding)."""
    if bits not in EMBEDDING_BITS:
        raise QuantError(f"embedding_bits must be one of {EMBEDDING_BITS} (0 = keep float), got {bits}")
