"""Quantization-aware fine-tune to int4: per-group fake-quantized weights with a straight-through
estimator (`lmops.quant.qat`), then real int4 (`Int4Linear`) on the very grid that was trained."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

from lmops.quant.config import QuantError, check_group
from lmops.quant.method import scheme
from lmops.quant.methods.int4 import Int4Storage
from lmops.quant.registry import register_method


@dataclass(frozen=True)
class QATConfig:
    """Fine-tune `steps` optimizer steps with int4 per-group fake quantization, then `convert` to real
    int4 (RTN on the trained weights: the same grid as the fake quantizer). `fake_quant=False` is the
    control: the same fine-tune in float, rounded only afterwards. `objective`: "lm" (next-token loss,
    `lmops.model.train.train_lm`) or "distill" (KL to the unquantized model, `lmops.quant.qat.distill`);
    `data`: "train" (the corpus' train split) or "calibration" (the `quantize.calibration` windows: for
    a model not trained on the corpus, e.g. general English for SmolLM2); `trainable` (distill only):
    "all" parameters or just the "linears" that get quantized."""
    group_size: int = 64
    steps: int = 30
    lr: float = 3e-4
    batch_size: int = 8
    fake_quant: bool = True
    objective: str = "lm"
    data: str = "train"
    trainable: str = "all"

    def __post_init__(self):
        check_group(self.group_size)
        if self.steps < 1 or not 0 < self.lr < 1 or self.batch_size < 1:
            raise QuantError(f"invalid QAT settings: {self}")
        if self.objective not in ("lm", "distill"):
            raise QuantError(f"QAT objective must be 'lm' or 'distill', got {self.objective!r}")
        if self.data not in ("train", "calibration"):
            raise QuantError(f"QAT data must be 'train' or 'calibration', got {self.data!r}")
        if self.trainable not in ("all", "linears"):
            raise QuantError(f"QAT trainable must be 'all' or 'linears', got {self.trainable!r}")


class QAT(Int4Storage):
    name = "qat"
    # ft_w4_rtn: control for QAT, the same fine-tune without fake quantization, then RTN int4
    schemes = {"qat_w4": scheme(fake_quant=True), "ft_w4_rtn": scheme(fake_quant=False)}

    def build(self, config: QATConfig, ctx) -> tuple:
        from lmops.quant import qat
        from lmops.quant.build import fine_tune, load_base

        model, tokenizer = load_base(ctx)
        teacher = copy.deepcopy(model).eval() if config.objective == "distill" else None
        if config.fake_quant:
            qat.prepare(model, config.group_size)
        if config.objective == "distill":
            windows = ctx.calib if config.data == "calibration" else _windows(tokenizer, ctx)
            qat.distill(model, teacher, windows, config.steps, config.lr, config.batch_size, ctx.seed, ctx.threads,
                        config.trainable, desc="qat distill" if config.fake_quant else "float distill")
            del teacher
        elif config.data == "calibration":
            texts = [tokenizer.decode(w[0]) for w in ctx.calib]
            fine_tune(model, tokenizer, dataclasses.replace(ctx, train_texts=texts), config.steps, config.lr,
                      config.batch_size)
        else:
            fine_tune(model, tokenizer, ctx, config.steps, config.lr, config.batch_size)
        if not config.fake_quant:  # the control: the same fine-tune in float, then int4 round-to-nearest
            qat.prepare(model, config.group_size)
        return qat.convert(model), tokenizer


def _windows(tokenizer, ctx) -> list:
    """The train texts as `ctx.context`-token windows (distillation on the corpus' train split)."""
    import torch

    from lmops.model.evaluate import token_stream

    ids = token_stream(tokenizer, ctx.train_texts, 64 * ctx.context)
    return [torch.tensor([ids[i:i + ctx.context]]) for i in range(0, len(ids) - ctx.context + 1, ctx.context)]


register_method(QATConfig, QAT())
