"""Tiny random models of every architecture family the code special-cases (issue 15 build 4): Llama,
Qwen2, Mistral and Gemma 3 (sliding-window layers and per-layer-type RoPE; a small vocabulary here,
but Gemma3's own config class). Each goes through import, a LoRA training step, generation, a
weight-quantization scheme, the quantized KV cache and RoPE scaling."""
import pytest
import torch

from lmops.model.importer import import_model

ARCHS = ["llama", "qwen2", "mistral", "gemma3_text"]


def tiny_config(arch: str, tok):
    from transformers import AutoConfig

    kw = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
              num_key_value_heads=1, head_dim=16, max_position_embeddings=64, tie_word_embeddings=True,
              pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    if arch == "gemma3_text":
        from transformers import Gemma3TextConfig

        return Gemma3TextConfig(**kw, sliding_window=16, layer_types=["sliding_attention", "full_attention"])
    if arch == "mistral":
        kw["sliding_window"] = 32
    return AutoConfig.for_model(arch, **kw)


@pytest.fixture(scope="module", params=ARCHS)
def arch_dir(request, tmp_path_factory, tiny_model):
    from transformers import AutoModelForCausalLM

    _, tok = tiny_model
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(request.param, tok))
    src = tmp_path_factory.mktemp(request.param) / "src"
    model.save_pretrained(src)
    tok.save_pretrained(src)
    out = src.parent / "imported"
    record = import_model(str(src), out)
    assert record["model_type"] == request.param
    return request.param, out


def test_lora_step_generate_and_weight_quantization(arch_dir, tiny_corpus):
    from lmops.model.build import load_model
    from lmops.model.generate import generate_texts
    from lmops.model.train import TrainConfig, train_lm
    from lmops.params import LoraTrainParams
    from lmops.quant.api import quantize_
    from lmops.quant.methods.int8 import Int8WeightConfig
    from lmops.stages.train import with_lora

    arch, d = arch_dir
    model, tok = load_model(d)
    peft = with_lora(model, LoraTrainParams(rank=2, alpha=4))
    texts = [x["text"] for x in tiny_corpus.documents[:8]]
    res = train_lm(peft, tok, texts, TrainConfig(context=32, steps=2, batch_size=2, lr=1e-3, progress=False))
    assert all(loss == loss for _, loss in res.losses) and res.tokens > 0
    model = peft.merge_and_unload()
    assert len(generate_texts(model, tok, ["The pump", "A valve is"], 3)) == 2
    q = quantize_(model, Int8WeightConfig())
    with torch.no_grad():
        assert torch.isfinite(q(input_ids=torch.tensor([[5, 6, 7]])).logits).all()


def test_quantized_kv_cache_and_rope_scaling(arch_dir):
    from lmops.longctx.rope import RopeConfig, base_theta, inv_freq, scaled_copy
    from lmops.model.build import load_model
    from lmops.model.generate import generate_texts
    from lmops.quant.config import KVCacheConfig, QuantError
    from lmops.quant.kv import generate_kwargs, new_cache

    arch, d = arch_dir
    model, tok = load_model(d)
    kv = KVCacheConfig(bits=8, group_size=16, residual=4)
    if arch in ("gemma3_text", "mistral"):  # sliding-window layers: the quantized cache refuses them, clearly
        with pytest.raises(QuantError, match="full attention"):
            new_cache(model, kv)
    if arch == "gemma3_text":
        assert base_theta(model.config) == model.config.rope_parameters["full_attention"]["rope_theta"]
    if arch in ("llama", "qwen2"):
        out = generate_texts(model, tok, ["The pump"], 8, cut=None, min_new_tokens=8, **generate_kwargs(kv))
        assert len(out) == 1
    before, _ = inv_freq(model)
    for kind in ("linear", "dynamic", "yarn"):
        scaled = scaled_copy(model, RopeConfig(kind, 2.0, 64))
        ids = torch.randint(2, model.config.vocab_size, (1, 100), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.isfinite(scaled(input_ids=ids).logits).all(), kind
        if kind in ("linear", "yarn"):
            assert not torch.equal(inv_freq(scaled)[0], before), kind
