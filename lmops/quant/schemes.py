"""The grid: scheme name -> `Scheme` (a weight config plus an optional KV-cache config), built from
the `quantize` params. Light: importing this pulls in no torch, so params validation can use it."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from lmops.quant.config import (
    BnbConfig,
    FloatConfig,
    Int4WeightConfig,
    Int8WeightConfig,
    KVCacheConfig,
    LoraSpec,
    QATConfig,
    QLoRAConfig,
    QuantError,
    Scheme,
    SmoothQuantConfig,
)

if TYPE_CHECKING:
    from lmops.params import QuantizeParams

BF16 = FloatConfig("bfloat16")


def _kv(p: "QuantizeParams", bits: int) -> KVCacheConfig:
    return KVCacheConfig(bits=bits, group_size=p.kv_group_size, residual=p.kv_residual)


def _lora(p: "QuantizeParams") -> LoraSpec:
    return LoraSpec(rank=p.lora_rank, alpha=p.lora_alpha, steps=p.lora_steps, lr=p.lora_lr)


def _qat(p: "QuantizeParams", lora: bool, fake_quant: bool = True) -> QATConfig:
    return QATConfig(group_size=p.group_size, steps=p.lora_steps if lora else p.qat_steps,
                     lr=p.lora_lr if lora else p.qat_lr, batch_size=p.batch_size, lora=_lora(p) if lora else None,
                     fake_quant=fake_quant)


SCHEMES: dict[str, Callable[["QuantizeParams"], tuple[object, KVCacheConfig | None]]] = {
    "fp32": lambda p: (FloatConfig("float32"), None),
    "bf16": lambda p: (BF16, None),
    "w8": lambda p: (Int8WeightConfig(), None),
    "w4_rtn": lambda p: (Int4WeightConfig(p.group_size, "rtn"), None),
    "w4_gptq": lambda p: (Int4WeightConfig(p.group_size, "gptq", p.gptq_damp), None),
    "w8a8_smoothquant": lambda p: (SmoothQuantConfig(p.smoothquant_alpha), None),
    "kv8": lambda p: (BF16, _kv(p, 8)),
    "kv4": lambda p: (BF16, _kv(p, 4)),
    "w8_kv8": lambda p: (Int8WeightConfig(), _kv(p, 8)),
    "w4_gptq_kv8": lambda p: (Int4WeightConfig(p.group_size, "gptq", p.gptq_damp), _kv(p, 8)),
    "bnb_int8": lambda p: (BnbConfig("int8"), None),
    "bnb_nf4": lambda p: (BnbConfig("nf4", double_quant=False), None),
    "bnb_nf4_dq": lambda p: (BnbConfig("nf4", double_quant=True), None),
    "qat_w4": lambda p: (_qat(p, lora=False), None),
    "qat_lora_w4": lambda p: (_qat(p, lora=True), None),
    # control for QAT: the same fine-tune without fake quantization, then RTN int4
    "ft_w4_rtn": lambda p: (_qat(p, lora=False, fake_quant=False), None),
    "qlora_nf4": lambda p: (QLoRAConfig(lora=_lora(p), batch_size=p.batch_size), None),
}


def build_scheme(name: str, p: "QuantizeParams") -> Scheme:
    """The validated `Scheme` for `name`; an unknown name or a bad setting raises QuantError."""
    if name not in SCHEMES:
        raise QuantError(f"unknown quantization scheme {name!r}; known: {', '.join(SCHEMES)}")
    weights, kv = SCHEMES[name](p)
    return Scheme(name, weights, kv)
