"""`lmops stage evaluate`: held-out perplexity, in-context recall and open-book KB-QA of the trained
base model, written to metrics/base.json."""
from __future__ import annotations

from pathlib import Path

from lmops.io import InputError, read_json, write_json
from lmops.layout import BASE_METRICS, BASE_MODEL, CORPUS, TRAIN_STATS
from lmops.params import Params


def evaluate_model_dir(model_dir: Path, p: Params, root: Path, context: int) -> dict:
    import torch

    from lmops.data import Corpus
    from lmops.inputs import check_model_files
    from lmops.model.build import count_params, load_model, resolve_device
    from lmops.model.evaluate import english_perplexity, evaluate_base

    # Every input is checked before the (long) evaluation: one line naming a corrupt file.
    corpus = Corpus.load(root / CORPUS)
    check_model_files(model_dir)
    stats = read_json(model_dir / TRAIN_STATS)
    if not isinstance(stats, dict) or not {"train_tokens", "train_seconds", "base"} <= set(stats):
        raise InputError(f"{model_dir / TRAIN_STATS} is corrupt: it needs train_tokens, train_seconds and base")
    torch.set_num_threads(p.evaluate.threads)
    model, tokenizer = load_model(model_dir, device=resolve_device(p.device))
    e = p.evaluate
    metrics = evaluate_base(model, tokenizer, corpus, context=context, ppl_tokens=e.ppl_tokens,
                            max_items=e.max_items, max_new_tokens=e.max_new_tokens, chat=e.chat)
    if e.english_text:
        metrics["english_perplexity"] = english_perplexity(model, tokenizer, root / e.english_text, context,
                                                           e.ppl_tokens)
    return {**metrics, "params": count_params(model), "train_tokens": stats["train_tokens"],
            "train_seconds": stats["train_seconds"], "base": stats["base"], "context": context}


def run(p: Params, root: Path) -> dict:
    metrics = evaluate_model_dir(root / BASE_MODEL, p, root, p.train.context)
    write_json(root / BASE_METRICS, metrics)
    return metrics
