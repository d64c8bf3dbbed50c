"""QLoRA: a LoRA adapter (peft) trained on a frozen bitsandbytes NF4 base, saved as an adapter beside
the NF4 base (`adapter/`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from lmops.quant.config import LoraSpec, QuantError
from lmops.quant.method import HF_FORMAT, QuantMethod, scheme
from lmops.quant.registry import register_method


@dataclass(frozen=True)
class QLoRAConfig:
    """A LoRA adapter (peft) trained on a frozen bitsandbytes NF4 base, kept as an adapter."""
    lora: LoraSpec = field(default_factory=LoraSpec)
    batch_size: int = 8
    double_quant: bool = True

    def __post_init__(self):
        if self.batch_size < 1:
            raise QuantError(f"invalid QLoRA batch_size: {self.batch_size}")


def serve_in(model, dtype):
    """Switch a float32-trained bitsandbytes 4-bit model (+ adapter) to `dtype` for saving and serving,
    like the other variants: floats (embedding, norms, LoRA factors) cast, 4-bit codes and their
    absmax untouched, compute dtype switched. (`model.to(dtype)` is refused for bnb models.)"""
    import bitsandbytes as bnb
    import torch

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.compute_dtype = dtype
            module.weight.quant_state.dtype = dtype
    for p in model.parameters():
        if type(p) is torch.nn.Parameter and p.is_floating_point():
            p.data = p.data.to(dtype)
    config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    qc = config.quantization_config
    if isinstance(qc, dict):
        qc["bnb_4bit_compute_dtype"] = str(dtype).removeprefix("torch.")
    else:
        qc.bnb_4bit_compute_dtype = dtype
    config.dtype = dtype
    return model


class QLoRA(QuantMethod):
    name = "qlora"
    fmt = HF_FORMAT
    schemes = {"qlora_nf4": scheme()}

    def build(self, config: QLoRAConfig, ctx) -> tuple:
        import torch

        from lmops.quant.build import fine_tune, lora_model
        from lmops.quant.methods.bnb import BnbConfig, load_bnb

        model, tokenizer = load_bnb(BnbConfig("nf4", config.double_quant), ctx.base, training=True)
        model = lora_model(model, config.lora, ctx.seed)
        fine_tune(model, tokenizer, ctx, config.lora.steps, config.lora.lr, config.batch_size)
        return serve_in(model.eval(), torch.bfloat16), tokenizer  # the adapter is saved beside the NF4 base


register_method(QLoRAConfig, QLoRA())
