"""Weight-only int4 by round-to-nearest: asymmetric, one (scale, zero) per `group_size` input columns,
stored as `Int4Linear` (packed nibbles, see `lmops.quant.int4` for why not torchao's int4). Its
handler also saves and rebuilds `Int4Linear` layers, for every method that ends in them (GPTQ, QAT)."""
from __future__ import annotations

from dataclasses import dataclass

from lmops.quant.config import QuantError, check_group
from lmops.quant.method import QuantMethod, scheme
from lmops.quant.registry import register_method


@dataclass(frozen=True)
class Int4WeightConfig:
    """Weight-only int4 round-to-nearest, one (scale, zero) per `group_size` input columns."""
    group_size: int = 64
    bits: int = 4

    def __post_init__(self):
        check_group(self.group_size)
        if self.bits != 4:
            raise QuantError(f"Int4WeightConfig stores 4-bit weights, got bits={self.bits}")


def check_divides(linears: dict, group_size: int) -> None:
    for name, layer in linears.items():
        if layer.in_features % group_size:
            raise QuantError(f"group_size {group_size} does not divide {name}.in_features={layer.in_features}")


class Int4Storage(QuantMethod):
    """Saving and rebuilding `Int4Linear` layers: the shape of each goes to quant.json ("int4")."""

    def save_meta(self, model) -> dict:
        from lmops.quant.int4 import Int4Linear

        return {"int4": {n: {"group_size": m.group_size, "in": m.in_features, "out": m.out_features,
                             "bias": m.bias is not None, "lora_rank": 0 if m.lora_A is None else m.lora_A.shape[0]}
                         for n, m in model.named_modules() if isinstance(m, Int4Linear)}}

    def skeleton(self, model, meta: dict) -> None:
        from lmops.quant.api import set_module
        from lmops.quant.int4 import Int4Linear

        for name, spec in meta.get("int4", {}).items():
            set_module(model, name, Int4Linear(spec["in"], spec["out"], spec["group_size"], bias=spec["bias"],
                                               lora_rank=spec["lora_rank"]))


class Int4Weight(Int4Storage):
    name = "int4"
    schemes = {"w4_rtn": scheme()}

    def quantize_linears(self, model, group_size: int, codes) -> object:
        """Replace every target linear by an `Int4Linear` of `codes(name, float weight)`."""
        import torch

        from lmops.quant.api import set_module, target_linears
        from lmops.quant.int4 import Int4Linear

        linears = target_linears(model)
        check_divides(linears, group_size)
        for name, layer in linears.items():
            q, scale, zero = codes(name, layer.weight.detach().float())
            set_module(model, name, Int4Linear.from_codes(q, scale, zero, group_size, layer.bias))
        return model.to(torch.bfloat16)

    def apply(self, model, config: Int4WeightConfig, calib):
        from lmops.quant.int4 import rtn

        return self.quantize_linears(model, config.group_size, lambda name, w: rtn(w, config.group_size))


register_method(Int4WeightConfig, Int4Weight())
