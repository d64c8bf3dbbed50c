"""QAT with a LoRA adapter: the base stays frozen at its int4-fake-quantized values and a peft LoRA
adapter learns the correction; the adapter is kept (unmerged) beside the int4 base in `Int4Linear`."""
from __future__ import annotations

from dataclasses import dataclass, field

from lmops.quant.config import LoraSpec, QuantError, check_group
from lmops.quant.method import scheme
from lmops.quant.methods.int4 import Int4Storage
from lmops.quant.registry import register_method


@dataclass(frozen=True)
class QATLoRAConfig:
    """int4 fake-quantized frozen base (one (scale, zero) per `group_size` columns) + LoRA `lora`."""
    group_size: int = 64
    batch_size: int = 8
    lora: LoraSpec = field(default_factory=LoraSpec)

    def __post_init__(self):
        check_group(self.group_size)
        if self.batch_size < 1:
            raise QuantError(f"invalid QAT-LoRA batch_size: {self.batch_size}")


class QATLoRA(Int4Storage):
    name = "qat_lora"
    schemes = {"qat_lora_w4": scheme()}

    def build(self, config: QATLoRAConfig, ctx) -> tuple:
        from lmops.quant import qat
        from lmops.quant.build import fine_tune, load_base, lora_model

        model, tokenizer = load_base(ctx)
        qat.prepare(model, config.group_size)
        model = lora_model(model, config.lora, ctx.seed)  # base frozen at its fake-quantized values
        fine_tune(model, tokenizer, ctx, config.lora.steps, config.lora.lr, config.batch_size)
        return qat.convert(model), tokenizer


register_method(QATLoRAConfig, QATLoRA())
