"""`quantize_(model, config)`: one verb, dispatched through the method registry (`lmops.quant.registry`)
to the in-place transform of the config's method; and the helpers methods share: the target linears,
calibration statistics, module replacement and torchao int8."""
from __future__ import annotations

import torch
from torch import nn

from lmops.quant.config import QuantError
from lmops.quant.registry import method_for

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def target_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every nn.Linear except the LM head, which goes with the (often tied) input embedding: the weight-only
    methods quantize the pair together (`embedding_bits`, `lmops.quant.embedding`)."""
    found = {name: m for name, m in model.named_modules()
             if isinstance(m, nn.Linear) and not name.endswith("lm_head")}
    if not found:
        raise QuantError(f"{type(model).__name__} has no linear layers to quantize")
    return found


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


@torch.no_grad()
def collect_stats(model: nn.Module, calib: list[torch.Tensor], names: list[str], hessian: bool
                  ) -> dict[str, torch.Tensor]:
    """Per target linear: the input's per-channel max |x| (in,), or its Hessian sum x x^T (in, in)."""
    if not calib:
        raise QuantError("calibration needs at least one token sequence")
    stats: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(module, args):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])  # (tokens, in)
            if hessian:
                stats[name] = stats.get(name, 0) + x.T @ x
            else:
                stats[name] = torch.maximum(stats.get(name, torch.zeros(x.shape[1], device=x.device)), x.abs().amax(0))
        return fn

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    try:
        device = next(model.parameters()).device
        for ids in calib:
            model(input_ids=ids.to(device))
    finally:
        for h in handles:
            h.remove()
    return stats


def torchao_int8(model: nn.Module, ao_config) -> nn.Module:
    """torchao int8 (`ao_config`) on the target linears, the rest of the model in bf16."""
    from torchao.quantization import quantize_ as ao_quantize_

    names = set(target_linears(model))
    model.to(torch.bfloat16)
    ao_quantize_(model, ao_config, filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and fqn in names)
    return model


def quantize_(model: nn.Module, config, calib: list[torch.Tensor] | None = None) -> nn.Module:
    """Quantize `model` in place per `config`; `calib` is a list of (1, T) token tensors for the
    methods that calibrate (GPTQ, SmoothQuant). Returns the model for chaining."""
    handler = method_for(config)
    model.eval()
    return handler.apply(model, config, calib or [])
