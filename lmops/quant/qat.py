"""Quantization-aware training: `prepare` swaps linears for fake-quantized ones (int4 per-group,
straight-through estimator), training runs as usual, `convert` stores the trained weights as real
int4 on the very grid the fake quantizer used (so outputs match up to float rounding).

Hand-written rather than torchao's QAT because torchao's int4 target layouts do not run on this CPU
(see `lmops.quant.int4`); the fake quantizer here shares its grid with our int4 storage.
"""
from __future__ import annotations

import torch
from torch import nn

from lmops.quant.api import set_module, target_linears
from lmops.quant.int4 import Int4Linear, fake_quantize, rtn
from lmops.quant.methods.int4 import check_divides


class FakeQuantLinear(nn.Linear):
    """nn.Linear whose forward uses int4-fake-quantized weights; gradients pass straight through
    the rounding. A subclass of nn.Linear, so peft can wrap it with LoRA."""

    group_size: int = 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w_q = w + (fake_quantize(w, self.group_size) - w).detach()  # STE: forward quantized, backward identity
        return nn.functional.linear(x, w_q.to(x.dtype), self.bias)


def prepare(model: nn.Module, group_size: int) -> nn.Module:
    linears = target_linears(model)
    check_divides(linears, group_size)
    for name, layer in linears.items():
        fq = FakeQuantLinear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        fq.group_size = group_size
        fq.load_state_dict(layer.state_dict())
        set_module(model, name, fq)
    return model


def _to_int4(fq: FakeQuantLinear, lora=None) -> Int4Linear:
    q, scale, zero = rtn(fq.weight.detach().float(), fq.group_size)
    return Int4Linear.from_codes(q, scale, zero, fq.group_size, fq.bias, lora)  # lora: B has the scaling folded in


def convert(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """Fake-quantized (optionally peft-LoRA-wrapped) model -> plain model with Int4Linear layers."""
    if hasattr(model, "peft_config"):
        from peft.tuners.lora import LoraLayer

        base = model.get_base_model()
        for name, module in list(base.named_modules()):
            if isinstance(module, LoraLayer) and isinstance(module.base_layer, FakeQuantLinear):
                key = module.active_adapters[0]
                a = module.lora_A[key].weight  # (r, in)
                b = module.lora_B[key].weight * module.scaling[key]  # (out, r)
                set_module(base, name, _to_int4(module.base_layer, (a, b)))
        model = base
    for name, module in list(model.named_modules()):
        if isinstance(module, FakeQuantLinear):
            set_module(model, name, _to_int4(module))
    return model.to(dtype).eval()
