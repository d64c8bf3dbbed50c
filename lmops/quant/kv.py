"""Key/value-cache quantization through transformers' `QuantizedCache` with the HQQ backend
(hqq supports 8 and 4 bits on CPU; the quanto backend only does 2 and 4), and its measurement:
bytes held at a fixed context, and perplexity when every chunk attends to the quantized past."""
from __future__ import annotations

import math

from lmops.quant.artifact import tensor_bytes
from lmops.quant.config import KVCacheConfig


def cache_kwargs(kv: KVCacheConfig) -> dict:
    """QuantizedCache arguments: groups run along each token's head vector (axis 1), so a token's
    codes never depend on later tokens and left padding in a batch stays harmless."""
    return {"backend": "hqq", "nbits": kv.bits, "q_group_size": kv.group_size, "residual_length": kv.residual,
            "axis_key": 1, "axis_value": 1}


def generate_kwargs(kv: KVCacheConfig | None) -> dict:
    """Extra `generate()` arguments: a fresh quantized cache per call."""
    return {} if kv is None else {"cache_implementation": "quantized", "cache_config": cache_kwargs(kv)}


def new_cache(model, kv: KVCacheConfig | None):
    from transformers import DynamicCache, QuantizedCache

    if kv is None:
        return DynamicCache(config=model.config)
    return QuantizedCache(config=model.config, **cache_kwargs(kv))


def prefill(model, ids, kv: KVCacheConfig | None, chunk: int):
    """Run (B, T) `ids` through the model `chunk` tokens at a time with one cache: each chunk sees
    the cache's (quantized) past, as decoding would. Returns (logits (B, T, V), cache)."""
    import torch

    cache = new_cache(model, kv)
    logits = []
    with torch.no_grad():
        for i in range(0, ids.shape[1], chunk):
            out = model(input_ids=ids[:, i:i + chunk], past_key_values=cache, use_cache=True)
            logits.append(out.logits.float())
    return torch.cat(logits, 1), cache


def cache_bytes(cache) -> int:
    """Bytes the cache holds: quantized codes with their scales/zeros plus any full-precision residual."""
    total, seen = 0, set()
    for layer in cache.layers:
        for attr in ("keys", "values", "_quantized_keys", "_quantized_values"):
            total += tensor_bytes(getattr(layer, attr, None), seen)
    return total


def kv_bytes(model, kv: KVCacheConfig | None, context: int, chunk: int, vocab: int) -> int:
    """Cache bytes after `context` tokens (batch 1) have been prefilled in `chunk`-token steps."""
    import torch

    ids = torch.randint(0, vocab, (1, context), generator=torch.Generator().manual_seed(0))
    _, cache = prefill(model, ids, kv, chunk)
    return cache_bytes(cache)


def window_perplexity(model, ids: list[int], max_length: int, kv: KVCacheConfig | None, chunk: int) -> float:
    """Perplexity over non-overlapping `max_length` windows (stride = max_length, the foundation's
    recipe). With a KV config each window is prefilled chunk by chunk through the quantized cache, so
    later chunks read quantized keys/values; without one, a window is one forward pass."""
    import torch

    nll, count = 0.0, 0
    for begin in range(0, len(ids) - 1, max_length):
        window = torch.tensor([ids[begin:begin + max_length]])
        if window.shape[1] < 2:
            break
        logits, _ = prefill(model, window, kv, chunk if kv else max_length)
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], window[0, 1:], reduction="sum")
        nll += float(loss)
        count += window.shape[1] - 1
    return math.exp(nll / max(1, count))
