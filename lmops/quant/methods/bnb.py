"""bitsandbytes through transformers' `BitsAndBytesConfig`: LLM.int8 ("int8") or 4-bit NormalFloat
("nf4", optionally double-quantized absmax), saved with the model's own `save_pretrained`."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from lmops.quant.config import QuantError
from lmops.quant.method import HF_FORMAT, QuantMethod, scheme
from lmops.quant.registry import register_method

log = logging.getLogger(__name__)

# bitsandbytes 4-bit stores one absmax per 64 weights; on CPUs with AVX512-BF16/AMX its inference kernel
# repacks each layer into (64-column block, 32-row tile) pieces and fails (a reshape error deep in
# bitsandbytes) on a layer whose input width is not a multiple of the block or output not of the tile.
BNB_4BIT_BLOCK = 64
BNB_CPU_TILE_ROWS = 32


@dataclass(frozen=True)
class BnbConfig:
    """bitsandbytes through `BitsAndBytesConfig`: LLM.int8 ("int8") or 4-bit NormalFloat ("nf4")."""
    mode: str = "nf4"
    double_quant: bool = False

    def __post_init__(self):
        if self.mode not in ("int8", "nf4"):
            raise QuantError(f"bitsandbytes mode must be 'int8' or 'nf4', got {self.mode!r}")


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


def bnb_config(mode: str, double_quant: bool, compute_dtype, skip: list[str] = ()):
    from transformers import BitsAndBytesConfig

    if mode == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    # a given skip list replaces transformers' default one (the tied LM head), so it is named here too
    skip_modules = ["lm_head", *(re.escape(n) for n in skip)] if skip else None
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double_quant,
                              bnb_4bit_compute_dtype=compute_dtype, llm_int8_skip_modules=skip_modules)


def load_bnb(config: BnbConfig, base: Path, training: bool = False) -> tuple:
    """(model, tokenizer) of `base` loaded through bitsandbytes. Served in bf16 like the other variants;
    trained in float32, as bf16 backward through the 4-bit layers is ~4x slower on a CPU without native
    bf16 (measured: 6.4 s vs 0.9 s per batch)."""
    import torch

    from lmops.model.build import load_model

    dtype = torch.float32 if training else torch.bfloat16
    skip = bnb_4bit_skips(base) if config.mode == "nf4" else []
    if skip:
        log.warning("bitsandbytes 4-bit: %d layer(s) stay in %s, their widths are not multiples of its "
                    "%d-column block / %d-row CPU tile: %s", len(skip), str(dtype).removeprefix("torch."),
                    BNB_4BIT_BLOCK, BNB_CPU_TILE_ROWS, ", ".join(skip))
    return load_model(base, quantization_config=bnb_config(config.mode, config.double_quant, dtype, skip), dtype=dtype)


class Bnb(QuantMethod):
    name = "bnb"
    fmt = HF_FORMAT
    schemes = {"bnb_int8": scheme(mode="int8"), "bnb_nf4": scheme(mode="nf4", double_quant=False),
               "bnb_nf4_dq": scheme(mode="nf4", double_quant=True)}

    def build(self, config: BnbConfig, ctx) -> tuple:
        return load_bnb(config, ctx.base)


register_method(BnbConfig, Bnb())
