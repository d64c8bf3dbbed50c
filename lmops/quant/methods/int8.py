"""Weight-only int8, one scale per output channel: torchao's `Int8WeightOnlyConfig` (int8 tensor
subclasses that run on CPU and pickle with `weights_only=True`)."""
from __future__ import annotations

from dataclasses import dataclass

from lmops.quant.config import QuantError
from lmops.quant.method import QuantMethod, scheme
from lmops.quant.registry import register_method


@dataclass(frozen=True)
class Int8WeightConfig:
    """Weight-only int8, one scale per output channel (torchao `Int8WeightOnlyConfig`)."""
    bits: int = 8

    def __post_init__(self):
        if self.bits != 8:
            raise QuantError(f"Int8WeightConfig stores 8-bit weights, got bits={self.bits}")


class Int8Weight(QuantMethod):
    name = "int8"
    schemes = {"w8": scheme(), "w8_kv8": scheme(kv=8)}

    def apply(self, model, config: Int8WeightConfig, calib):
        from torchao.quantization import Int8WeightOnlyConfig

        from lmops.quant.api import torchao_int8

        return torchao_int8(model, Int8WeightOnlyConfig())


register_method(Int8WeightConfig, Int8Weight())
