"""Quantization configs: one small dataclass per method, each validating itself (torchao style).

No torch import here, so params validation and `lmops --help` stay fast."""
from __future__ import annotations

from dataclasses import dataclass, field

from lmops.errors import QuantError  # noqa: F401  (re-exported: configs raise it)


def _check_group(group_size: int) -> None:
    if group_size < 2 or group_size & (group_size - 1):
        raise QuantError(f"group_size must be a power of two >= 2, got {group_size}")


@dataclass(frozen=True)
class FloatConfig:
    """The unquantized baseline, stored and run in `dtype`."""
    dtype: str = "bfloat16"

    def __post_init__(self):
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise QuantError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")


@dataclass(frozen=True)
class Int8WeightConfig:
    """Weight-only int8, one scale per output channel (torchao `Int8WeightOnlyConfig`)."""
    bits: int = 8

    def __post_init__(self):
        if self.bits != 8:
            raise QuantError(f"Int8WeightConfig stores 8-bit weights, got bits={self.bits}")


@dataclass(frozen=True)
class Int4WeightConfig:
    """Weight-only int4, asymmetric, one (scale, zero) per `group_size` input columns.
    method "rtn" rounds to nearest; "gptq" compensates each rounding error on the not-yet-quantized
    columns with the inverse Hessian of calibration inputs (Frantar et al., 2022)."""
    group_size: int = 64
    method: str = "rtn"
    damp: float = 0.01  # GPTQ: diagonal damping, as a share of the mean Hessian diagonal
    bits: int = 4

    def __post_init__(self):
        _check_group(self.group_size)
        if self.bits != 4:
            raise QuantError(f"Int4WeightConfig stores 4-bit weights, got bits={self.bits}")
        if self.method not in ("rtn", "gptq"):
            raise QuantError(f"int4 method must be 'rtn' or 'gptq', got {self.method!r}")
        if not 0 < self.damp < 1:
            raise QuantError(f"damp must be in (0, 1), got {self.damp}")


@dataclass(frozen=True)
class SmoothQuantConfig:
    """W8A8: int8 weights (per channel) and dynamic per-token int8 activations, after moving
    activation outliers into the weights with SmoothQuant scales s_j = max|X_j|^a / max|W_j|^(1-a)."""
    alpha: float = 0.5

    def __post_init__(self):
        if not 0 <= self.alpha <= 1:
            raise QuantError(f"SmoothQuant alpha must be in [0, 1], got {self.alpha}")


@dataclass(frozen=True)
class BnbConfig:
    """bitsandbytes through `BitsAndBytesConfig`: LLM.int8 ("int8") or 4-bit NormalFloat ("nf4")."""
    mode: str = "nf4"
    double_quant: bool = False

    def __post_init__(self):
        if self.mode not in ("int8", "nf4"):
            raise QuantError(f"bitsandbytes mode must be 'int8' or 'nf4', got {self.mode!r}")


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
        _check_group(self.group_size)
        if self.residual < 1:
            raise QuantError(f"KV-cache residual must be >= 1, got {self.residual}")


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 8
    alpha: int = 16
    steps: int = 40
    lr: float = 2e-3

    def __post_init__(self):
        if self.rank < 1 or self.steps < 1 or not 0 < self.lr < 1:
            raise QuantError(f"invalid LoRA settings: {self}")


@dataclass(frozen=True)
class QATConfig:
    """Quantization-aware fine-tune: int4 per-group fake-quantized weights with a straight-through
    estimator, then `convert` to real int4 (`Int4WeightConfig` RTN on the trained weights: the same
    grid as the fake quantizer). With `lora`, the base stays frozen at its fake-quantized values and a
    LoRA adapter (peft) learns the correction; the adapter is kept beside the int4 base."""
    group_size: int = 64
    steps: int = 40
    lr: float = 3e-4
    batch_size: int = 8
    lora: LoraSpec | None = None
    fake_quant: bool = True  # False: a control that fine-tunes in float and only then rounds (RTN)

    def __post_init__(self):
        _check_group(self.group_size)
        if self.lora and not self.fake_quant:
            raise QuantError("the float fine-tune control takes no LoRA adapter")
        if self.steps < 1 or not 0 < self.lr < 1 or self.batch_size < 1:
            raise QuantError(f"invalid QAT settings: {self}")


@dataclass(frozen=True)
class QLoRAConfig:
    """A LoRA adapter (peft) trained on a frozen bitsandbytes NF4 base, kept as an adapter."""
    lora: LoraSpec = field(default_factory=LoraSpec)
    batch_size: int = 8
    double_quant: bool = True


@dataclass(frozen=True)
class Scheme:
    """One variant of the grid: a weight config plus an optional KV-cache config."""
    name: str
    weights: object
    kv: KVCacheConfig | None = None
