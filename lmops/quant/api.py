"""`quantize_(model, config)`: one verb, a registry from config type to its in-place transform.

Weight-only int8 and W8A8 use torchao's `Int8WeightOnlyConfig` / `Int8DynamicActivationInt8WeightConfig`
(int8 tensors with per-channel scales; they run on CPU and pickle with `weights_only=True`). Int4 uses
`lmops.quant.int4` (see there why). SmoothQuant's calibration and scale folding are done here: torchao's
prototype folds nothing into RMSNorm, which is what makes the smoothing free at inference.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lmops.quant.config import FloatConfig, Int4WeightConfig, Int8WeightConfig, QuantError, SmoothQuantConfig
from lmops.quant.int4 import Int4Linear, gptq, rtn

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def target_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every nn.Linear except the LM head, which is tied to the embedding and stays in float."""
    found = {name: m for name, m in model.named_modules()
             if isinstance(m, nn.Linear) and not name.endswith("lm_head")}
    if not found:
        raise QuantError(f"{type(model).__name__} has no linear layers to quantize")
    return found


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
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
                stats[name] = torch.maximum(stats.get(name, torch.zeros(x.shape[1])), x.abs().amax(0))
        return fn

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    try:
        for ids in calib:
            model(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    return stats


def _float(model: nn.Module, config: FloatConfig, calib) -> nn.Module:
    return model.to(DTYPES[config.dtype])


def _int4(model: nn.Module, config: Int4WeightConfig, calib) -> nn.Module:
    linears = target_linears(model)
    for name, layer in linears.items():
        if layer.in_features % config.group_size:
            raise QuantError(f"group_size {config.group_size} does not divide {name}.in_features={layer.in_features}")
    hessians = collect_stats(model, calib, list(linears), hessian=True) if config.method == "gptq" else {}
    for name, layer in linears.items():
        w = layer.weight.detach().float()
        q, scale, zero = (gptq(w, hessians[name], config.group_size, config.damp) if config.method == "gptq"
                          else rtn(w, config.group_size))
        _set_module(model, name, Int4Linear.from_codes(q, scale, zero, config.group_size, layer.bias))
    return model.to(torch.bfloat16)


def _torchao_int8(model: nn.Module, ao_config) -> nn.Module:
    from torchao.quantization import quantize_ as ao_quantize_

    names = set(target_linears(model))
    model.to(torch.bfloat16)
    ao_quantize_(model, ao_config, filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and fqn in names)
    return model


def _int8(model: nn.Module, config: Int8WeightConfig, calib) -> nn.Module:
    from torchao.quantization import Int8WeightOnlyConfig

    return _torchao_int8(model, Int8WeightOnlyConfig())


# (module that produces the input, the linears reading it, whether it is a norm or a linear)
# for LLaMA-family blocks. A norm absorbs 1/s in its weight; a producing linear in its output rows.
SMOOTH_GROUPS = [("input_layernorm", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
                 ("post_attention_layernorm", ["mlp.gate_proj", "mlp.up_proj"]),
                 ("self_attn.v_proj", ["self_attn.o_proj"]),  # exact only without GQA (checked below)
                 ("mlp.up_proj", ["mlp.down_proj"])]  # act(gate) * up is linear in up


@torch.no_grad()
def smooth_(model: nn.Module, calib: list[torch.Tensor], alpha: float) -> int:
    """Fold SmoothQuant scales into each (producer, consumers) pair; returns how many pairs."""
    cfg = model.config
    mha = getattr(cfg, "num_key_value_heads", cfg.num_attention_heads) == cfg.num_attention_heads
    blocks = [f"{n}.{i}" for n, m in model.named_modules()
              if n.endswith("layers") and isinstance(m, nn.ModuleList) for i in range(len(m))]
    pairs = [(f"{b}.{prev}", [f"{b}.{c}" for c in consumers]) for b in blocks
             for prev, consumers in SMOOTH_GROUPS if mha or prev != "self_attn.v_proj"]
    pairs = [(p, cs) for p, cs in pairs if all(_has(model, n) for n in [p, *cs])]
    act_max = collect_stats(model, calib, sorted({c for _, cs in pairs for c in cs}), hessian=False)
    for prev, consumers in pairs:
        w_max = torch.stack([model.get_submodule(c).weight.abs().amax(0) for c in consumers]).amax(0)
        s = (act_max[consumers[0]].clamp(min=1e-5) ** alpha / w_max.clamp(min=1e-5) ** (1 - alpha)).clamp(1e-4, 1e4)
        producer = model.get_submodule(prev)
        if isinstance(producer, nn.Linear):
            producer.weight.div_(s[:, None])
            if producer.bias is not None:
                producer.bias.div_(s)
        else:
            producer.weight.div_(s)
        for c in consumers:
            model.get_submodule(c).weight.mul_(s[None, :])
    return len(pairs)


def _has(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


def _smoothquant(model: nn.Module, config: SmoothQuantConfig, calib) -> nn.Module:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig

    target_linears(model)  # fail early on a model with nothing to quantize
    model.float()
    smooth_(model, calib, config.alpha)
    return _torchao_int8(model, Int8DynamicActivationInt8WeightConfig())


TRANSFORMS: dict[type, Callable[[nn.Module, object, list | None], nn.Module]] = {
    FloatConfig: _float,
    Int8WeightConfig: _int8,
    Int4WeightConfig: _int4,
    SmoothQuantConfig: _smoothquant,
}


def quantize_(model: nn.Module, config, calib: list[torch.Tensor] | None = None) -> nn.Module:
    """Quantize `model` in place per `config`; `calib` is a list of (1, T) token tensors for the
    methods that calibrate (GPTQ, SmoothQuant). Returns the model for chaining."""
    transform = TRANSFORMS.get(type(config))
    if transform is None:
        raise QuantError(f"no in-place transform for {type(config).__name__}; known: "
                         f"{', '.join(t.__name__ for t in TRANSFORMS)}")
    model.eval()
    return transform(model, config, calib or [])
