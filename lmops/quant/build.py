"""Build one variant of the grid from the base model: a registry from weight-config type to a builder
that returns (model, tokenizer, save format). In-place schemes go through `quantize_`; bitsandbytes
schemes load through `BitsAndBytesConfig`; QAT and QLoRA fine-tune on the corpus' train split."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lmops.quant.config import BnbConfig, LoraSpec, QATConfig, QLoRAConfig, Scheme

log = logging.getLogger(__name__)


@dataclass
class BuildContext:
    base: Path  # the Hugging Face directory of the model to quantize
    calib: list = field(default_factory=list)  # (1, T) token tensors of the calibration (val) split
    train_texts: list[str] = field(default_factory=list)  # fine-tune texts (train split)
    context: int = 256
    threads: int = 1
    seed: int = 0


def _calibration(tokenizer, corpus, qp) -> list:
    """`calib_sequences` windows of the val split: never the test split the variants are scored on."""
    import torch

    from lmops.model.evaluate import token_stream

    ids = token_stream(tokenizer, [d["text"] for d in corpus.split(corpus.documents, "val")],
                       qp.calib_sequences * qp.max_length)
    return [torch.tensor([ids[i:i + qp.max_length]]) for i in range(0, len(ids), qp.max_length)]


def build_context(qp, base: Path, corpus, threads: int):
    """(BuildContext, tokenizer): what every scheme is built from, with the `quantize` section's
    calibration windows and the training texts that QAT and LoRA schemes fine-tune on."""
    from lmops.model.build import load_model
    from lmops.model.train import training_texts
    from lmops.quant.build import BuildContext

    _, tokenizer = load_model(base)
    ctx = BuildContext(base=base, calib=_calibration(tokenizer, corpus, qp), train_texts=training_texts(corpus, qp.seed),
                       context=qp.max_length, threads=threads, seed=qp.seed)
    return ctx, tokenizer


def _in_place(config, ctx: BuildContext):
    from lmops.model.build import load_model
    from lmops.quant.api import quantize_

    model, tokenizer = load_model(ctx.base)  # float32
    return quantize_(model, config, ctx.calib), tokenizer, "torch"


# bitsandbytes 4-bit stores one absmax per 64 weights; on CPUs with AVX512-BF16/AMX its inference kernel
# repacks each layer into (64-column block, 32-row tile) pieces and fails (a reshape error deep in
# bitsandbytes) on a layer whose input width is not a multiple of the block or output not of the tile.
BNB_4BIT_BLOCK = 64
BNB_CPU_TILE_ROWS = 32


def bnb_4bit_skips(base: Path) -> list[str]:
    """Target linears of the model in `base` that bitsandbytes' 4-bit CPU kernel cannot take. They are
    kept out of 4-bit on every CPU (not only where that kernel runs), so a variant is the same
    whichever machine built it. Read from a weightless (meta) skeleton of the model."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lmops.quant.api import target_linears

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base))
    return sorted(name for name, m in target_linears(skeleton).items()
                  if m.in_features % BNB_4BIT_BLOCK or m.out_features % BNB_CPU_TILE_ROWS)


def _bnb_config(mode: str, double_quant: bool, compute_dtype, skip: list[str] = ()):
    import re

    from transformers import BitsAndBytesConfig

    if mode == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    # a given skip list replaces transformers' default one (the tied LM head), so it is named here too
    skip_modules = ["lm_head", *(re.escape(n) for n in skip)] if skip else None
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double_quant,
                              bnb_4bit_compute_dtype=compute_dtype, llm_int8_skip_modules=skip_modules)


def _bnb(config: BnbConfig, ctx: BuildContext, training: bool = False):
    """Served in bf16 like the other variants; trained in float32, as bf16 backward through the 4-bit
    layers is ~4x slower on a CPU without native bf16 (measured: 6.4 s vs 0.9 s per batch)."""
    import torch

    from lmops.model.build import load_model

    dtype = torch.float32 if training else torch.bfloat16
    skip = bnb_4bit_skips(ctx.base) if config.mode == "nf4" else []
    if skip:
        log.warning("bitsandbytes 4-bit: %d layer(s) stay in %s, their widths are not multiples of its "
                    "%d-column block / %d-row CPU tile: %s", len(skip), str(dtype).removeprefix("torch."),
                    BNB_4BIT_BLOCK, BNB_CPU_TILE_ROWS, ", ".join(skip))
    model, tokenizer = load_model(ctx.base, quantization_config=_bnb_config(config.mode, config.double_quant, dtype,
                                                                             skip), dtype=dtype)
    return model, tokenizer, "hf"


def _lora_model(model, lora: LoraSpec, seed: int):
    import torch
    from peft import LoraConfig, get_peft_model

    from lmops.quant.api import target_linears

    torch.manual_seed(seed)
    targets = sorted({name.rsplit(".", 1)[-1] for name in target_linears(model)})
    return get_peft_model(model, LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=0.0,
                                            target_modules=targets, bias="none"))


def _fine_tune(model, tokenizer, ctx: BuildContext, steps: int, lr: float, batch_size: int) -> None:
    from lmops.model.train import TrainConfig, train_lm

    train_lm(model, tokenizer, ctx.train_texts, TrainConfig(context=ctx.context, steps=steps, batch_size=batch_size,
                                                            lr=lr, warmup=min(5, steps // 4), seed=ctx.seed,
                                                            threads=ctx.threads, desc="quantization fine-tune"))


def _qat(config: QATConfig, ctx: BuildContext):
    from lmops.model.build import load_model
    from lmops.quant import qat

    model, tokenizer = load_model(ctx.base)
    if config.fake_quant:
        qat.prepare(model, config)
    if config.lora:
        model = _lora_model(model, config.lora, ctx.seed)  # base frozen at its (fake-quantized) values
    _fine_tune(model, tokenizer, ctx, config.steps, config.lr, config.batch_size)
    if not config.fake_quant:  # the control: the same fine-tune in float, then int4 round-to-nearest
        qat.prepare(model, config)
    return qat.convert(model), tokenizer, "torch"


def _qlora(config: QLoRAConfig, ctx: BuildContext):
    import torch

    model, tokenizer, _ = _bnb(BnbConfig("nf4", config.double_quant), ctx, training=True)
    model = _lora_model(model, config.lora, ctx.seed)
    _fine_tune(model, tokenizer, ctx, config.lora.steps, config.lora.lr, config.batch_size)
    return _serve_in(model.eval(), torch.bfloat16), tokenizer, "hf"  # the adapter is saved beside the NF4 base


def _serve_in(model, dtype):
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


BUILDERS: dict[type, Callable] = {BnbConfig: _bnb, QATConfig: _qat, QLoRAConfig: _qlora}


def build_variant(scheme: Scheme, ctx: BuildContext):
    """(model, tokenizer, save format) of `scheme` built from `ctx.base`."""
    return BUILDERS.get(type(scheme.weights), _in_place)(scheme.weights, ctx)
