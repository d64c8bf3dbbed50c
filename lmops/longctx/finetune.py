"""The short position-interpolation fine-tune (Chen et al. 2023): train the RoPE-scaled model for a
few steps at the extended length, so it adapts to the compressed positions.

Training text is the corpus' train split (never the evaluation suite) plus recall items stretched to
the extended length: the train split's access-code notes with filler before and after, so the
fine-tune sees facts far from their question, as long prompts need.
"""
from __future__ import annotations

import random
import re

from lmops.data import Corpus
from lmops.data.generate import FILLER, qa_text
from lmops.model.train import TrainConfig, TrainResult, train_lm, training_texts


def long_recall_texts(corpus: Corpus, tokenizer, length: int, count: int, seed: int) -> list[str]:
    """`count` train-split recall items, each padded with filler to about `length` tokens, the fact
    at a random depth."""
    rng = random.Random(seed)
    rows = corpus.split(corpus.recall, "train")
    per_sentence = len(tokenizer(" " + FILLER[0], add_special_tokens=False)["input_ids"])
    texts = []
    for _ in range(count):
        row = rng.choice(rows)
        # The note asked about ("Note: the access code for X is CODE."); items may carry several notes.
        fact = next(s for s in re.split(r"(?<=\.) ", row["context"]) if s.endswith(f" is {row['answer']}."))
        n = max(1, int(rng.uniform(0.5, 0.95) * length / per_sentence))
        filler = [rng.choice(FILLER) for _ in range(n)]
        at = rng.randint(0, n)
        texts.append(" ".join(filler[:at] + [fact] + filler[at:]) + qa_text(row["question"], row["answer"], row["lead"]))
    return texts


def pi_finetune(model, tokenizer, corpus: Corpus, *, length: int, steps: int, batch_size: int, lr: float,
                seed: int = 0, threads: int = 2, progress: bool = True) -> TrainResult:
    """Fine-tune the (already RoPE-scaled) `model` in place at `length` tokens for `steps` steps."""
    texts = training_texts(corpus, seed) + long_recall_texts(corpus, tokenizer, length, 4 * steps * batch_size, seed)
    return train_lm(model, tokenizer, texts, TrainConfig(context=length, steps=steps, batch_size=batch_size, lr=lr,
                                                         warmup=min(10, steps // 5), seed=seed, threads=threads,
                                                         progress=progress, desc="position-interpolation fine-tune"))
