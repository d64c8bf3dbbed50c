"""A saved lmops variant as a plain float Hugging Face directory: what another runtime's converter reads
(`lmops.engines.base.export` calls it when its source is a variant).

Each of lmops' int8 / int4 modules (linears, the embedding, the LM head) becomes a float module holding
its dequantized weight, with a QAT-LoRA adapter merged in, so the directory carries exactly the values
lmops serves, in float32. The engine's converter then rounds them onto its own grid. That second
rounding is exact where the grids agree: lmops' `w8` linears are int8 with one absmax scale per output
row, as CTranslate2's int8 is, so each row's largest code maps back to 127 and every code comes back
(the engine still computes differently: CTranslate2 also quantizes activations to int8). It is not
exact elsewhere: an int4 group of lmops' asymmetric grid (a fractional zero point) re-rounded onto ONNX
Runtime GenAI's symmetric blocks moves by up to half of the engine's step, which is why that engine
takes an int4 variant's codes as they are (`lmops.engines.onnxruntime_genai.inject_codes`).
"""
from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lmops.io import InputError


def dequantized(model):
    """`model` with every lmops int8/int4 module replaced, in place, by a float32 `nn.Linear` /
    `nn.Embedding` of its dequantized weight; a tied embedding and LM head stay tied."""
    import torch
    from torch import nn

    from lmops.quant.api import set_module
    from lmops.quant.int4 import Int4Embedding, Int4Linear
    from lmops.quant.int8 import Int8Embedding, Int8Linear

    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    tied = isinstance(head, (Int8Linear, Int4Linear)) and isinstance(emb, (Int8Embedding, Int4Embedding)) and \
        head.qweight.data_ptr() == emb.qweight.data_ptr()  # one saved table (torch.load keeps the storage shared)
    with torch.no_grad():
        for name, m in list(model.named_modules()):
            if isinstance(m, (Int8Linear, Int4Linear)):
                w = m.dequantize().float()
                if getattr(m, "lora_A", None) is not None:
                    w = w + m.lora_B.float() @ m.lora_A.float()
                linear = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
                linear.weight.copy_(w)
                if m.bias is not None:
                    linear.bias.copy_(m.bias.float())
                set_module(model, name, linear)
            elif isinstance(m, (Int8Embedding, Int4Embedding)):
                table = nn.Embedding(m.num_embeddings, m.embedding_dim)
                table.weight.copy_(_table(m))
                set_module(model, name, table)
        if tied:
            model.get_output_embeddings().weight = model.get_input_embeddings().weight
    return model.float()


def _table(m):
    """The float32 table of an Int8Embedding / Int4Embedding (its forward returns the model's dtype)."""
    from lmops.quant.int4 import Int4Embedding, dequantize_codes, unpack_nibbles

    if isinstance(m, Int4Embedding):
        return dequantize_codes(unpack_nibbles(m.qweight), m.scale.float(), m.zero.float())
    w = m.qweight.float() * m.scale.float()[:, None]
    return w if m.col_scale is None else w * m.col_scale.float()[None, :]


@contextmanager
def as_float_dir(src: Path) -> Iterator[tuple[Path, str | None]]:
    """(directory, variant scheme): `src` itself when it is a plain model directory, or, for an lmops
    variant (quant.json), a temporary float32 Hugging Face directory of its dequantized weights."""
    from lmops.quant.artifact import QUANT_FILE

    if not (src / QUANT_FILE).is_file():
        yield src, None
        return
    from lmops.quant.artifact import load_variant

    model, tokenizer, meta = load_variant(src)
    if meta.get("format") != "torch":
        raise InputError(f"{src} is a {meta['scheme']} variant in format {meta.get('format')!r}: only lmops' own "
                         "weight formats (int8/int4, format 'torch') can be exported to another engine")
    if meta.get("kv"):
        raise InputError(f"{src} is {meta['scheme']}, a KV-cache scheme: an engine export carries weights only "
                         "and each engine keeps its own cache; export its weight-only variant")
    model = dequantized(model)
    with tempfile.TemporaryDirectory(prefix="lmops-dequantized-") as tmp:
        model.config.tie_word_embeddings = model.get_output_embeddings().weight is model.get_input_embeddings().weight
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        yield Path(tmp), meta["scheme"]
