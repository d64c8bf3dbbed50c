"""The unquantized baselines: the model cast to a float dtype (fp32, bf16; bf16 under the kv* schemes)."""
from __future__ import annotations

from dataclasses import dataclass

from lmops.quant.config import QuantError
from lmops.quant.method import QuantMethod, scheme
from lmops.quant.registry import register_method


@dataclass(frozen=True)
class FloatConfig:
    """The unquantized baseline, stored and run in `dtype`."""
    dtype: str = "bfloat16"

    def __post_init__(self):
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise QuantError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")


class Cast(QuantMethod):
    name = "cast"
    schemes = {"fp32": scheme(dtype="float32"), "bf16": scheme(dtype="bfloat16"),
               "kv8": scheme(kv=8, dtype="bfloat16"), "kv4": scheme(kv=4, dtype="bfloat16")}

    def apply(self, model, config: FloatConfig, calib):
        from lmops.quant.api import DTYPES

        return model.to(DTYPES[config.dtype])


register_method(FloatConfig, Cast())
