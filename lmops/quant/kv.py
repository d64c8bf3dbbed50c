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
    """Extra arguments of `lmops.model.generate.generate_rows` (and `decode_args`): a factory that
    gives each `generate()` call a fresh appending quantized cache."""
    return {} if kv is None else {"cache_factory": lambda model: new_cache(model, kv)}


def decode_args(model, kwargs: dict) -> dict:
    """`kwargs` for one `model.generate()` call, a `cache_factory` turned into a fresh cache."""
    kwargs = dict(kwargs)
    factory = kwargs.pop("cache_factory", None)
    return {**kwargs, "past_key_values": factory(model)} if factory else kwargs


def _append_layer_class():
    from transformers.cache_utils import HQQQuantizedLayer

    class AppendHQQLayer(HQQQuantizedLayer):
        """transformers' `QuantizedLayer` de-quantizes the whole store and quantizes it again at every
        flush of the residual (each `residual` tokens), so a long decode costs the square of its
        length and its old codes drift through repeated rounding. With groups along each token's
        head vector (axis 1) a token's codes never depend on other tokens, so only the flushed block
        is quantized and its codes are appended: each token is quantized once."""

        def update(self, key_states, value_states, *args, **kwargs):
            import torch

            self.cumulative_length += key_states.shape[-2]
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self._quantized_keys = [self._quantize(key_states.contiguous(), axis=self.axis_key)]
                self._quantized_values = [self._quantize(value_states.contiguous(), axis=self.axis_value)]
                return key_states, value_states
            if self._pending_beam_idx is not None:
                raise NotImplementedError("the appending quantized KV cache does not support beam search")
            residual_k = torch.cat([self.keys, key_states], dim=-2) if self.keys.dim() == 4 else key_states
            residual_v = torch.cat([self.values, value_states], dim=-2) if self.values.dim() == 4 else value_states
            old_k = [self._dequantize(q) for q in self._quantized_keys]
            old_v = [self._dequantize(q) for q in self._quantized_values]
            keys_out = torch.cat([*old_k, residual_k], dim=-2)
            values_out = torch.cat([*old_v, residual_v], dim=-2)
            if residual_k.shape[-2] >= self.residual_length:
                self._quantized_keys.append(self._quantize(residual_k.contiguous(), axis=self.axis_key))
                self._quantized_values.append(self._quantize(residual_v.contiguous(), axis=self.axis_value))
                self.keys = torch.tensor([], dtype=key_states.dtype, device=key_states.device)
                self.values = torch.tensor([], dtype=key_states.dtype, device=key_states.device)
            else:
                self.keys, self.values = residual_k, residual_v
            return keys_out, values_out

    return AppendHQQLayer


def new_cache(model, kv: KVCacheConfig | None):
    """A DynamicCache, or (with `kv`) a QuantizedCache whose layers append the codes of each flushed
    block instead of re-quantizing the whole store (`AppendHQQLayer`)."""
    from transformers import DynamicCache, QuantizedCache

    if kv is None:
        return DynamicCache(config=model.config)
    args = cache_kwargs(kv)
    try:
        cache = QuantizedCache(config=model.config, **args)
    except ValueError as err:  # e.g. Gemma 3's sliding-window layers
        from lmops.quant.config import QuantError

        raise QuantError(f"{model.config.model_type}: a quantized KV cache needs full attention in every layer "
                         f"({err})") from None
    layer = _append_layer_class()
    cache.layers = [layer(nbits=args["nbits"], axis_key=args["axis_key"], axis_value=args["axis_value"],
                          q_group_size=args["q_group_size"], residual_length=args["residual_length"])
                    for _ in cache.layers]
    return cache


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
    for layer in cache.layers:  # a quantized store is a list of (codes, meta) blocks
        for attr in ("keys", "values", "_quantized_keys", "_quantized_values"):
            total += tensor_bytes(getattr(layer, attr, None), seen)
    return total


def native_context(model, default: int = 2048) -> int:
    """The model's full native context (config `max_position_embeddings`; 8,192 for SmolLM2)."""
    return int(getattr(model.config, "max_position_embeddings", 0) or default)


def kv_bytes_filled(model, kv: KVCacheConfig | None, context: int, chunk: int) -> int:
    """Cache bytes after `context` tokens (batch 1), measured on a real cache of the model's shape
    (layers, KV heads, head dim, float dtype) filled through `cache.update` with random keys/values,
    with no forward pass, so a full native context (8,192 tokens) costs seconds. The blocks are those a
    `chunk`-token prefill leaves (first chunk, then the rest; a partial last chunk stays in the
    residual), so the figure equals `kv_bytes` at the same context (tested): cache bytes do not depend
    on the values."""
    import torch

    cfg = model.config
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    cache = new_cache(model, kv)
    gen = torch.Generator().manual_seed(0)
    first = min(chunk, context)
    middle = (context - first) // chunk * chunk
    with torch.no_grad():
        for n in [first, middle, context - first - middle]:
            if n <= 0:
                continue
            for layer in range(cfg.num_hidden_layers):
                k, v = (torch.randn(1, kv_heads, n, head_dim, generator=gen).to(dtype) for _ in range(2))
                cache.update(k, v, layer)
    return cache_bytes(cache)


def cache_args(model) -> dict:
    """`model.generate()` arguments for a loaded variant: a fresh quantized cache when its quant.json
    names a KV setting (`load_variant` records it on the model), else none. Used by serving."""
    kv = getattr(model, "lmops_kv", None)
    return {"past_key_values": new_cache(model, kv)} if kv is not None else {}


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
