"""W8A8 SmoothQuant: int8 weights (per channel) and dynamic per-token int8 activations (the math of
torchao's `Int8DynamicActivationInt8WeightConfig`, run as int8 x int8 by `lmops.quant.int8.Int8Linear`
on oneDNN's VNNI/AMX kernel), after moving activation outliers into the weights with scales
s_j = max|X_j|^a / max|W_j|^(1-a). Calibration and scale folding are done here: torchao's prototype
folds nothing into RMSNorm, which is what makes the smoothing free at inference."""
from __future__ import annotations

from dataclasses import dataclass

from lmops.quant.config import QuantError
from lmops.quant.method import scheme
from lmops.quant.methods.int4 import Int4Storage
from lmops.quant.registry import register_method


@dataclass(frozen=True)
class SmoothQuantConfig:
    """W8A8 after SmoothQuant scaling with migration strength `alpha`."""
    alpha: float = 0.5
    embedding_bits: int = 8  # the embedding / LM head (weight-only int8; 0 = float)

    def __post_init__(self):
        from lmops.quant.config import check_embedding_bits

        if not 0 <= self.alpha <= 1:
            raise QuantError(f"SmoothQuant alpha must be in [0, 1], got {self.alpha}")
        check_embedding_bits(self.embedding_bits)


# (module that produces the input, the linears reading it) for LLaMA-family blocks. A norm absorbs
# 1/s in its weight; a producing linear in its output rows.
SMOOTH_GROUPS = [("input_layernorm", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
                 ("post_attention_layernorm", ["mlp.gate_proj", "mlp.up_proj"]),
                 ("self_attn.v_proj", ["self_attn.o_proj"]),  # exact only without GQA (checked below)
                 ("mlp.up_proj", ["mlp.down_proj"])]  # act(gate) * up is linear in up


def _has(model, name: str) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


def smooth_(model, calib: list, alpha: float) -> int:
    """Fold SmoothQuant scales into each (producer, consumers) pair; returns how many pairs."""
    import torch
    from torch import nn

    from lmops.quant.api import collect_stats

    cfg = model.config
    mha = getattr(cfg, "num_key_value_heads", cfg.num_attention_heads) == cfg.num_attention_heads
    blocks = [f"{n}.{i}" for n, m in model.named_modules()
              if n.endswith("layers") and isinstance(m, nn.ModuleList) for i in range(len(m))]
    pairs = [(f"{b}.{prev}", [f"{b}.{c}" for c in consumers]) for b in blocks
             for prev, consumers in SMOOTH_GROUPS if mha or prev != "self_attn.v_proj"]
    pairs = [(p, cs) for p, cs in pairs if all(_has(model, n) for n in [p, *cs])]
    act_max = collect_stats(model, calib, sorted({c for _, cs in pairs for c in cs}), hessian=False)
    with torch.no_grad():
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


class SmoothQuant(Int4Storage):
    name = "smoothquant"
    schemes = {"w8a8_smoothquant": scheme()}

    def apply(self, model, config: SmoothQuantConfig, calib):
        from lmops.quant.api import target_linears
        from lmops.quant.methods.int8 import int8_linears

        target_linears(model)  # fail early on a model with nothing to quantize
        model.float()
        smooth_(model, calib, config.alpha)
        return self.quantize_embeddings(int8_linears(model, act_quant=True), config.embedding_bits, 64)


register_method(SmoothQuantConfig, SmoothQuant())
