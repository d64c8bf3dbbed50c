"""Weight-only int4 by round-to-nearest: asymmetric, one (scale, zero) per `group_size` input columns,
stored as `Int4Linear` (packed nibbles, run on ATen's int4 kernels: see `lmops.quant.int4`), the
embedding and LM head too (`embedding_bits`, `lmops.quant.embedding`). Its storage base class also saves
and rebuilds `Int4Linear`, `Int8Linear` and quantized-embedding layers, for every method that ends in
them (GPTQ, QAT, int8, SmoothQuant)."""
from __future__ import annotations

from dataclasses import dataclass

from lmops.quant.config import QuantError, check_group
from lmops.quant.method import QuantMethod, scheme
from lmops.quant.registry import register_method


@dataclass(frozen=True)
class Int4WeightConfig:
    """Weight-only int4 round-to-nearest, one (scale, zero) per `group_size` input columns."""
    group_size: int = 64
    bits: int = 4
    # the embedding and LM head (tied: one table): 8 (per row), 4 (same groups as the linears) or 0 = float.
    # 8 by default: on SmolLM2-135M an int4 table (g64) took held-out perplexity from 31.1 to 36.2 (1,024
    # tokens; float table 30.9, bf16 model 24.7); `w4_rtn_e4` is the all-int4 scheme.
    embedding_bits: int = 8

    def __post_init__(self):
        from lmops.quant.config import check_embedding_bits

        check_group(self.group_size)
        if self.bits != 4:
            raise QuantError(f"Int4WeightConfig stores 4-bit weights, got bits={self.bits}")
        check_embedding_bits(self.embedding_bits)


def check_divides(linears: dict, group_size: int) -> None:
    for name, layer in linears.items():
        if layer.in_features % group_size:
            raise QuantError(f"group_size {group_size} does not divide {name}.in_features={layer.in_features}")


class Int4Storage(QuantMethod):
    """Saving and rebuilding lmops' low-bit layers. quant.json records the shape of each `Int4Linear`
    ("int4") and `Int8Linear` ("int8"), and the quantized embedding / LM head ("embedding"); `skeleton`
    puts empty ones back before the state dict loads. The embedding's modules come first, so a tied
    LM head is rebuilt once, by the embedding."""

    def save_meta(self, model) -> dict:
        from lmops.quant.int4 import Int4Linear
        from lmops.quant.int8 import Int8Linear

        emb = getattr(model, "_lmops_embedding", None)
        skip = {emb["output"]} if emb and emb.get("output") else set()
        meta = {"int4": {n: {"group_size": m.group_size, "in": m.in_features, "out": m.out_features,
                             "bias": m.bias is not None, "lora_rank": 0 if m.lora_A is None else m.lora_A.shape[0]}
                         for n, m in model.named_modules() if isinstance(m, Int4Linear) and n not in skip}}
        int8 = {n: {"in": m.in_features, "out": m.out_features, "bias": m.bias is not None, "act_quant": m.act_quant}
                for n, m in model.named_modules() if isinstance(m, Int8Linear) and n not in skip}
        return {**meta, **({"int8": int8} if int8 else {}), **({"embedding": emb} if emb else {})}

    def skeleton(self, model, meta: dict) -> None:
        from lmops.quant.api import set_module
        from lmops.quant.embedding import rebuild_embeddings
        from lmops.quant.int4 import Int4Linear
        from lmops.quant.int8 import Int8Linear

        if meta.get("embedding"):
            rebuild_embeddings(model, meta["embedding"])
            model._lmops_embedding = meta["embedding"]
        for name, spec in meta.get("int4", {}).items():
            set_module(model, name, Int4Linear(spec["in"], spec["out"], spec["group_size"], bias=spec["bias"],
                                               lora_rank=spec["lora_rank"]))
        for name, spec in meta.get("int8", {}).items():
            set_module(model, name, Int8Linear(spec["in"], spec["out"], bias=spec["bias"], act_quant=spec["act_quant"]))

    @staticmethod
    def quantize_embeddings(model, bits: int, group_size: int):
        """The embedding / LM head at `bits` (0: left float), remembered for `save_meta`."""
        from lmops.quant.embedding import quantize_embeddings

        meta = quantize_embeddings(model, bits, group_size)
        if meta:
            model._lmops_embedding = meta
        return model


class Int4Weight(Int4Storage):
    name = "int4"
    schemes = {"w4_rtn": scheme(), "w4_rtn_e4": scheme(embedding_bits=4)}

    def quantize_linears(self, model, group_size: int, codes, embedding_bits: int = 0) -> object:
        """Replace every target linear by an `Int4Linear` of `codes(name, float weight)`, then the
        embedding / LM head by `embedding_bits` RTN (0: they stay float)."""
        import torch

        from lmops.quant.api import set_module, target_linears
        from lmops.quant.int4 import Int4Linear

        linears = target_linears(model)
        check_divides(linears, group_size)
        for name, layer in linears.items():
            q, scale, zero = codes(name, layer.weight.detach().float())
            set_module(model, name, Int4Linear.from_codes(q, scale, zero, group_size, layer.bias))
        return self.quantize_embeddings(model.to(torch.bfloat16), embedding_bits, group_size)

    def apply(self, model, config: Int4WeightConfig, calib):
        from lmops.quant.int4 import rtn

        return self.quantize_linears(model, config.group_size, lambda name, w: rtn(w, config.group_size),
                                     config.embedding_bits)


register_method(Int4WeightConfig, Int4Weight())
