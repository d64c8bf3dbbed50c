"""Quantization library on tiny tensors and the tiny model: bad input, byte accounting, GPTQ, QAT."""
from __future__ import annotations

import copy

import pytest
import torch

from lmops.quant.config import Int4WeightConfig, Int8WeightConfig, KVCacheConfig, LoraSpec, QATConfig, QuantError


def test_bad_input_gives_clear_errors(tiny_model):
    from lmops.params import ParamsError, validate
    from lmops.quant.api import quantize_
    from lmops.quant.schemes import build_scheme
    from tests.conftest import TINY

    with pytest.raises(QuantError, match="unknown quantization scheme 'w3'"):
        build_scheme("w3", validate(TINY).quantize)
    with pytest.raises(ParamsError, match="quantize.*unknown quantization scheme 'int3'"):
        validate({**TINY, "quantize": {"schemes": ["bf16", "int3"]}})
    with pytest.raises(ParamsError, match="group_size must be a power of two"):
        validate({**TINY, "quantize": {"group_size": 24}})
    with pytest.raises(QuantError, match="KV-cache bits must be 2, 4 or 8"):
        KVCacheConfig(bits=3)
    with pytest.raises(QuantError, match="4-bit"):
        Int4WeightConfig(bits=3)
    with pytest.raises(QuantError, match="int4 method must be"):
        Int4WeightConfig(method="awq")
    with pytest.raises(QuantError, match="control takes no LoRA"):
        QATConfig(lora=LoraSpec(), fake_quant=False)
    model = copy.deepcopy(tiny_model[0])  # hidden 32: a 64-column group cannot divide it
    with pytest.raises(QuantError, match="group_size 64 does not divide"):
        quantize_(model, Int4WeightConfig(group_size=64))
    with pytest.raises(QuantError, match="no linear layers to quantize"):
        quantize_(torch.nn.Sequential(torch.nn.Embedding(10, 4)), Int8WeightConfig())


def test_byte_accounting_is_exact(tmp_path):
    from safetensors.torch import save_file

    from lmops.quant.artifact import WEIGHTS_FILE, saved_weight_bytes
    from lmops.quant.int4 import Int4Linear, rtn

    w = torch.randn(64, 128)
    layer = Int4Linear.from_codes(*rtn(w, 32), group_size=32)
    shared = torch.ones(10, 10, dtype=torch.bfloat16)  # tied: two names, one storage
    torch.save({**layer.state_dict(), "emb": shared, "head": shared}, tmp_path / WEIGHTS_FILE)
    save_file({"x": torch.zeros(3, 5, dtype=torch.float32)}, tmp_path / "extra.safetensors")
    codes, scales, zeros = 64 * 128 // 2, 64 * (128 // 32) * 2, 64 * (128 // 32)  # packed nibbles, bf16, uint8
    assert saved_weight_bytes(tmp_path) == codes + scales + zeros + 10 * 10 * 2 + 3 * 5 * 4


def test_int4_roundtrip_and_gptq_beats_rtn():
    from lmops.quant.int4 import Int4Linear, dequantize_codes, gptq, pack_nibbles, rtn, unpack_nibbles

    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 16, (8, 64), generator=g)
    assert torch.equal(unpack_nibbles(pack_nibbles(q)), q.to(torch.uint8))
    w = torch.randn(48, 128, generator=g)
    x = torch.randn(2048, 16, generator=g) @ torch.randn(16, 128, generator=g) + 0.1 * torch.randn(2048, 128, generator=g)
    h = x.T @ x
    errs = {}
    for name, (codes, scale, zero) in {"rtn": rtn(w, 32), "gptq": gptq(w, h, 32)}.items():
        assert codes.min() >= 0 and codes.max() <= 15
        layer = Int4Linear.from_codes(codes, scale, zero, 32)
        assert torch.allclose(layer.dequantize(), dequantize_codes(codes, scale.to(torch.bfloat16).float(), zero))
        errs[name] = float(((w - layer.dequantize()) @ x.T).norm())  # output error on the calibration inputs
    assert errs["gptq"] < 0.8 * errs["rtn"], errs


@pytest.mark.parametrize("lora", [False, True])
def test_qat_convert_matches_fake_quantized_model(tiny_model, lora):
    from lmops.quant import qat
    from lmops.quant.build import _lora_model
    from lmops.quant.config import LoraSpec
    from lmops.quant.int4 import Int4Linear

    model = qat.prepare(copy.deepcopy(tiny_model[0]).float(), QATConfig(group_size=16))
    if lora:
        model = _lora_model(model, LoraSpec(rank=4), seed=0)
        for name, p in model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero; make the adapter matter
                torch.nn.init.normal_(p, std=0.05)
    ids = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fake = model(input_ids=ids).logits
        converted = qat.convert(model, dtype=torch.float32)
        real = converted(input_ids=ids).logits
    assert any(isinstance(m, Int4Linear) for m in converted.modules())
    assert not any(isinstance(m, qat.FakeQuantLinear) for m in converted.modules())
    # exact grid; LoRA factors are stored in bf16, hence the tolerance
    assert torch.allclose(fake, real, atol=2e-2 if lora else 1e-4), (fake - real).abs().max()


def test_benchmark_targets_and_pareto():
    from benchmarks.quantize import targets
    from lmops.quant.report import pareto

    def row(total, ppl, tps=10.0):
        return {"weight_bytes": total - 100, "kv_bytes": 100, "total_bytes": total, "perplexity": ppl,
                "ood_perplexity": ppl, "kb_qa_exact_match": 0.5, "tokens_per_s": tps, "quantize_seconds": 1.0}

    m = {"baseline": "bf16", "context_tokens": 256, "schemes": {
        "fp32": row(2000, 3.00, tps=20), "bf16": row(1000, 3.00), "w8": row(600, 3.01), "w8_kv8": row(480, 3.02),
        "w4_rtn": row(400, 3.30), "w4_gptq": row(400, 3.10), "bnb_nf4": row(420, 3.20), "qat_w4": row(400, 3.20)}}
    status = {name: met for name, _, _, met in targets(m)}
    assert status["w8_kv8: total bytes vs baseline"] is True  # -52%
    assert status["w8_kv8: perplexity vs baseline"] is True  # +0.67%
    assert status["int8 KV cache alone: total bytes, w8 -> w8_kv8 at 256 tokens"] is True  # -20%
    assert status["best int4 (w4_gptq) perplexity vs min(w4_rtn, bnb_nf4)"] is True
    assert status["QAT (qat_w4): share of the int4 RTN perplexity gap recovered"] is False  # 1/3 of the gap
    assert status["fastest variant decode tokens/s vs fp32"] is False
    assert pareto(m) == ["w4_gptq", "w8_kv8", "w8", "bf16"]
