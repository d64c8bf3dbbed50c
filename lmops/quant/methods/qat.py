"""Quantization-aware fine-tune to int4: per-group fake-quantized weights with a straight-through
estimator (`lmops.quant.qat`), then real int4 (`Int4Linear`) on the very grid that was trained."""
from __future__ import annotations

from dataclasses import dataclass

from lmops.quant.config import QuantError, check_group
from lmops.quant.method import scheme
from lmops.quant.methods.int4 import Int4Storage
from lmops.quant.registry import register_method


@dataclass(frozen=True)
class QATConfig:
    """Fine-tune `steps` optimizer steps with int4 per-group fake quantization, then `convert` to real
    int4 (RTN on the trained weights: the same grid as the fake quantizer). `fake_quant=False` is the
    control: the same fine-tune in float, rounded only afterwards."""
    group_size: int = 64
    steps: int = 30
    lr: float = 3e-4
    batch_size: int = 8
    fake_quant: bool = True

    def __post_init__(self):
        check_group(self.group_size)
        if self.steps < 1 or not 0 < self.lr < 1 or self.batch_size < 1:
            raise QuantError(f"invalid QAT settings: {self}")


class QAT(Int4Storage):
    name = "qat"
    # ft_w4_rtn: control for QAT, the same fine-tune without fake quantization, then RTN int4
    schemes = {"qat_w4": scheme(fake_quant=True), "ft_w4_rtn": scheme(fake_quant=False)}

    def build(self, config: QATConfig, ctx) -> tuple:
        from lmops.quant import qat
        from lmops.quant.build import fine_tune, load_base

        model, tokenizer = load_base(ctx)
        if config.fake_quant:
            qat.prepare(model, config.group_size)
        fine_tune(model, tokenizer, ctx, config.steps, config.lr, config.batch_size)
        if not config.fake_quant:  # the control: the same fine-tune in float, then int4 round-to-nearest
            qat.prepare(model, config.group_size)
        return qat.convert(model), tokenizer


register_method(QATConfig, QAT())
