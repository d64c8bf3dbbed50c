"""Quantizing the input embedding and the LM head (int8 per row, or int4 per group), tied weights kept
tied: a tied pair becomes one set of codes and scales registered in both modules, so it is saved once,
loaded once (torch.save keeps the shared storage) and counted once (`tensor_bytes` dedups storages).

On SmolLM2-135M the tied 49,152 x 576 table is a fifth of the weights; left in bf16 it bounds what any
scheme saves. Its lookups dequantize only the rows read; the LM head runs on the int8/int4 kernels of
`Int8Linear` / `Int4Linear`. Used by the weight-only methods (`embedding_bits` in their configs)."""
from __future__ import annotations

from lmops.quant.config import QuantError, check_embedding_bits


def _names(model) -> tuple[str, str | None, bool]:
    """(input embedding's module name, LM head's module name or None, tied)."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    names = {id(m): n for n, m in model.named_modules()}
    tied = head is not None and getattr(head, "weight", None) is not None and head.weight is emb.weight
    return names[id(emb)], (names[id(head)] if head is not None else None), tied


def quantize_embeddings(model, bits: int, group_size: int = 64) -> dict | None:
    """Replace the input embedding and LM head of `model` by int8 (`bits=8`, one scale per row) or int4
    (`bits=4`, asymmetric groups of `group_size` along the hidden dimension) modules; returns the meta
    `rebuild_embeddings` needs (None for `bits=0`). A group size that does not divide the width is an
    error naming the layer."""
    import torch

    from lmops.quant.api import set_module

    check_embedding_bits(bits)
    if not bits:
        return None
    emb_name, head_name, tied = _names(model)
    emb = model.get_submodule(emb_name)
    num, dim = emb.weight.shape
    head = model.get_submodule(head_name) if head_name else None
    if head is not None and not isinstance(head, torch.nn.Linear):
        raise QuantError(f"{head_name} is a {type(head).__name__}, not a linear layer: cannot quantize it")
    meta = {"bits": bits, "group_size": group_size if bits == 4 else 0, "input": emb_name, "output": head_name,
            "tied": tied, "num": num, "dim": dim, "head_bias": head is not None and head.bias is not None,
            "col_scale": bits == 8}
    with torch.no_grad():
        if bits == 8:
            from lmops.quant.int8 import Int8Embedding, Int8Linear, quantize_table

            new_emb = Int8Embedding(num, dim, col_scale=True)
            q, s, c = quantize_table(emb.weight)
            new_emb.qweight, new_emb.scale, new_emb.col_scale = q, s.to(emb.weight.dtype), c.to(emb.weight.dtype)
            if head is not None:
                if tied:  # one table: the head's buffers are the embedding's
                    new_head = Int8Linear(dim, num, bias=head.bias is not None, col_scale=True)
                    new_head.qweight, new_head.scale, new_head.col_scale = new_emb.qweight, new_emb.scale, new_emb.col_scale
                    if head.bias is not None:
                        new_head.bias.data.copy_(head.bias.detach().float())
                else:
                    new_head = Int8Linear.from_float(head)
        else:
            from lmops.quant.int4 import ZERO_DTYPE, Int4Embedding, Int4Linear, pack_nibbles, rtn

            for name, m in [(emb_name, emb)] + ([(head_name, head)] if head is not None and not tied else []):
                if m.weight.shape[1] % group_size:
                    raise QuantError(f"group_size {group_size} does not divide {name} width {m.weight.shape[1]}")
            q, s, z = rtn(emb.weight.detach().float(), group_size)
            new_emb = Int4Embedding(num, dim, group_size)
            new_emb.qweight, new_emb.scale, new_emb.zero = pack_nibbles(q), s.to(torch.bfloat16), z.to(ZERO_DTYPE)
            if head is not None:
                if tied:
                    new_head = Int4Linear(dim, num, group_size, bias=head.bias is not None)
                    new_head.qweight, new_head.scale, new_head.zero = new_emb.qweight, new_emb.scale, new_emb.zero
                    if head.bias is not None:
                        new_head.bias.data.copy_(head.bias.detach().float())
                else:
                    new_head = Int4Linear.from_codes(*rtn(head.weight.detach().float(), group_size), group_size,
                                                     head.bias)
    set_module(model, emb_name, new_emb)
    if head is not None:
        set_module(model, head_name, new_head)
    if hasattr(model.config, "tie_word_embeddings"):  # transformers must not re-tie float weights over them
        model.config.tie_word_embeddings = tied
    return meta


def rebuild_embeddings(model, meta: dict) -> None:
    """Put empty quantized embedding / LM head modules (per `quantize_embeddings`' meta) into a float
    skeleton; the state dict then loads into them (a tied pair shares its saved tensors)."""
    from lmops.quant.api import set_module

    bits, num, dim, g = meta["bits"], meta["num"], meta["dim"], meta["group_size"]
    if bits == 8:
        from lmops.quant.int8 import Int8Embedding, Int8Linear

        col = meta.get("col_scale", False)
        emb = Int8Embedding(num, dim, col_scale=col)
        head = Int8Linear(dim, num, bias=meta["head_bias"], col_scale=col and meta["tied"])
    else:
        from lmops.quant.int4 import Int4Embedding, Int4Linear

        emb, head = Int4Embedding(num, dim, g), Int4Linear(dim, num, g, bias=meta["head_bias"])
    set_module(model, meta["input"], emb)
    if meta["output"]:
        set_module(model, meta["output"], head)
