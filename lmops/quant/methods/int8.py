"""Weight-only int8, one scale per output channel, stored as `lmops.quant.int8.Int8Linear` and run on
ATen's int8-weight kernel (`torch._weight_int8pack_mm`): torchao 0.18's `Int8WeightOnlyConfig` was
measured to dequantize the weight on every call on this CPU (see `lmops.quant.int8`). The embedding and
LM head are int8 too (`embedding_bits`; tied ones stay one table)."""
from __future__ import annotations

from dataclasses import dataclass

from lmops.quant.config import QuantError
from lmops.quant.method import scheme
from lmops.quant.methods.int4 import Int4Storage
from lmops.quant.registry import register_method


@dataclass(frozen=True)
class Int8WeightConfig:
    """Weight-only int8, one scale per output channel; `embedding_bits` for the embedding / LM head
    (8, 4 in groups of `embedding_group_size`, or 0 = float)."""
    bits: int = 8
    embedding_bits: int = 8
    embedding_group_size: int = 64

    def __post_init__(self):
        from lmops.quant.config import check_embedding_bits, check_group

        if self.bits != 8:
            raise QuantError(f"Int8WeightConfig stores 8-bit weights, got bits={self.bits}")
        check_embedding_bits(self.embedding_bits)
        check_group(self.embedding_group_size)


def int8_linears(model, act_quant: bool):
    """Every target linear -> `Int8Linear` (rest of the model bf16)."""
    import torch

    from lmops.quant.api import set_module, target_linears
    from lmops.quant.int8 import Int8Linear

    linears = target_linears(model)
    model.to(torch.bfloat16)
    for name, layer in linears.items():
        set_module(model, name, Int8Linear.from_float(layer, act_quant=act_quant))
    return model


class Int8Weight(Int4Storage):
    name = "int8"
    schemes = {"w8": scheme(), "w8_kv8": scheme(kv=8)}

    def apply(self, model, config: Int8WeightConfig, calib):
        return self.quantize_embeddings(int8_linears(model, act_quant=False), config.embedding_bits,
                                        config.embedding_group_size)


register_method(Int8WeightConfig, Int8Weight())
