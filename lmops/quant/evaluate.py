"""The same report card for every variant, measured on the reloaded artifact (real low-bit weights)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from lmops.quant.config import KVCacheConfig

METRIC_KEYS = ("weight_bytes", "kv_bytes", "total_bytes", "perplexity", "ood_perplexity", "kb_qa_exact_match",
               "tokens_per_s", "quantize_seconds", "float_embedding_bytes", "float_embedding_share",
               "full_context_tokens", "kv_bytes_full", "total_bytes_full")

log = logging.getLogger(__name__)


def float_embedding(model, weight_bytes: int, scheme: str = "") -> tuple[int, float]:
    """(bytes, share of `weight_bytes`) of the input embedding when it stays in floating point (0, 0.0
    when the scheme quantized it: `embedding_bits` of the weight-only methods). With tied embeddings it
    is the LM head too: on a small model with a large vocabulary (SmolLM2-135M: 49,152 x 576, a fifth of
    the weights) a float one bounds what a scheme saves, so each variant says so in a log line."""
    from lmops.quant.artifact import tensor_bytes

    weight = getattr(model.get_input_embeddings(), "weight", None)
    if weight is None or not weight.dtype.is_floating_point:
        return 0, 0.0
    n = tensor_bytes(weight)
    share = n / max(1, weight_bytes)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    log.warning("%s: the %sembedding stays %s: %.1f MB, %.0f%% of the weight bytes", scheme or type(model).__name__,
                "tied (input + LM head) " if tied else "", str(weight.dtype).replace("torch.", ""), n / 1e6, 100 * share)
    return n, round(share, 4)



@dataclass
class EvalData:
    test_ids: list[int]  # held-out domain text (test split), fixed token count
    ood_ids: list[int]  # out-of-domain text
    qa_prompts: list[str]
    qa_answers: list[str]
    decode_prompt: list[int]  # batch-1 prompt for the decode-speed run


def eval_data(corpus, tokenizer, qp) -> EvalData:
    from lmops.model.evaluate import kb_qa_items, token_stream

    test = token_stream(tokenizer, [d["text"] for d in corpus.split(corpus.documents, "test")], qp.ppl_tokens)
    ood = token_stream(tokenizer, [r["text"] for r in corpus.ood], qp.ood_tokens)
    from lmops.model.generate import has_chat_template

    prompts, answers = kb_qa_items(corpus, "test", qp.qa_items, tokenizer if has_chat_template(tokenizer) else None)
    return EvalData(test, ood, prompts, answers, test[:32])


def _timed_decode(model, ids, tokens: int, gen_kwargs: dict) -> float:
    import torch

    from lmops.quant.kv import decode_args

    args = decode_args(model, gen_kwargs)
    with torch.no_grad():
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                       pad_token_id=model.config.eos_token_id, **args)
        return tokens / (time.perf_counter() - start)


def decode_speeds(model_dirs: dict[str, Path], prompt: list[int], tokens: int, repeats: int) -> dict[str, float]:
    """Greedy batch-1 decode tokens/s of every variant (threads fixed by the caller): each is warmed up,
    then timed in `repeats` round-robin rounds and its best round is kept. Round-robin and best-of
    because the CPU is shared: a slow spell then hits every variant alike, and the fastest run of a
    variant is the one least disturbed by other processes."""
    import torch

    from lmops.quant.artifact import load_variant
    from lmops.quant.kv import generate_kwargs

    ids = torch.tensor([prompt])
    loaded = {}
    for name, d in model_dirs.items():
        model, _, meta = load_variant(d)
        gen = generate_kwargs(KVCacheConfig(**meta["kv"]) if meta.get("kv") else None)
        _timed_decode(model, ids, 4, gen)  # warm-up
        loaded[name] = (model, gen)
    best = {name: 0.0 for name in loaded}
    for _ in range(repeats):
        for name, (model, gen) in loaded.items():
            best[name] = max(best[name], _timed_decode(model, ids, tokens, gen))
    return {name: round(v, 2) for name, v in best.items()}


def evaluate_variant(model_dir: Path, data: EvalData, qp, quantize_seconds: float) -> dict:
    """Every metric but `tokens_per_s` (timed for all variants together, see `decode_speeds`)."""
    from lmops.model.evaluate import exact_match, generate_answers
    from lmops.quant.artifact import load_variant, saved_weight_bytes
    from lmops.quant.kv import generate_kwargs, kv_bytes, kv_bytes_filled, native_context, window_perplexity

    model, tokenizer, meta = load_variant(model_dir)
    kv = KVCacheConfig(**meta["kv"]) if meta.get("kv") else None
    gen = generate_kwargs(kv)
    preds = generate_answers(model, tokenizer, data.qa_prompts, qp.max_new_tokens, desc="kb qa", **gen)
    weight_bytes = saved_weight_bytes(model_dir)
    emb_bytes, emb_share = float_embedding(model, weight_bytes, model_dir.name)
    cache = kv_bytes(model, kv, qp.context_tokens, qp.kv_chunk, len(tokenizer))
    full = native_context(model)
    cache_full = kv_bytes_filled(model, kv, full, qp.kv_chunk)
    return {
        "weight_bytes": weight_bytes,
        "kv_bytes": cache,
        "total_bytes": weight_bytes + cache,
        "perplexity": round(window_perplexity(model, data.test_ids, qp.max_length, kv, qp.kv_chunk), 4),
        "ood_perplexity": round(window_perplexity(model, data.ood_ids, qp.max_length, kv, qp.kv_chunk), 4),
        "kb_qa_exact_match": round(exact_match(preds, data.qa_answers), 4),
        "tokens_per_s": None,
        "quantize_seconds": round(quantize_seconds, 3),
        "float_embedding_bytes": emb_bytes,
        "float_embedding_share": emb_share,
        "full_context_tokens": full,  # the model's native context (max_position_embeddings)
        "kv_bytes_full": cache_full,
        "total_bytes_full": weight_bytes + cache_full,
    }
