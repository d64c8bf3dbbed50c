"""The same report card for every variant, measured on the reloaded artifact (real low-bit weights)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from lmops.quant.config import KVCacheConfig

METRIC_KEYS = ("weight_bytes", "kv_bytes", "total_bytes", "perplexity", "ood_perplexity", "kb_qa_exact_match",
               "tokens_per_s", "quantize_seconds")


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
    prompts, answers = kb_qa_items(corpus, "test", qp.qa_items)
    return EvalData(test, ood, prompts, answers, test[:32])


def decode_tokens_per_s(model, prompt: list[int], tokens: int, repeats: int, gen_kwargs: dict) -> float:
    """Greedy batch-1 decode speed: one warm-up call, then the best of `repeats` timed calls that each
    produce exactly `tokens` new tokens (threads are fixed by the caller). Best, not median: on a
    shared CPU the fastest run is the one least disturbed by other processes."""
    import torch

    ids = torch.tensor([prompt])
    run = dict(do_sample=False, pad_token_id=model.config.eos_token_id, **gen_kwargs)
    with torch.no_grad():
        model.generate(ids, max_new_tokens=4, min_new_tokens=4, **run)
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, **run)
            rates.append(tokens / (time.perf_counter() - start))
    return max(rates)


def evaluate_variant(model_dir: Path, data: EvalData, qp, quantize_seconds: float) -> dict:
    from lmops.model.evaluate import exact_match, generate_answers
    from lmops.quant.artifact import load_variant, saved_weight_bytes
    from lmops.quant.kv import generate_kwargs, kv_bytes, window_perplexity

    model, tokenizer, meta = load_variant(model_dir)
    kv = KVCacheConfig(**meta["kv"]) if meta.get("kv") else None
    gen = generate_kwargs(kv)
    preds = generate_answers(model, tokenizer, data.qa_prompts, qp.max_new_tokens, desc="kb qa", **gen)
    weight_bytes = saved_weight_bytes(model_dir)
    cache = kv_bytes(model, kv, qp.context_tokens, qp.kv_chunk, len(tokenizer))
    return {
        "weight_bytes": weight_bytes,
        "kv_bytes": cache,
        "total_bytes": weight_bytes + cache,
        "perplexity": round(window_perplexity(model, data.test_ids, qp.max_length, kv, qp.kv_chunk), 4),
        "ood_perplexity": round(window_perplexity(model, data.ood_ids, qp.max_length, kv, qp.kv_chunk), 4),
        "kb_qa_exact_match": round(exact_match(preds, data.qa_answers), 4),
        "tokens_per_s": round(decode_tokens_per_s(model, data.decode_prompt, qp.decode_tokens, qp.decode_repeats, gen), 2),
        "quantize_seconds": round(quantize_seconds, 3),
    }
