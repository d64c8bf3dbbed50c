"""Causal-LM training on the corpus: whole items packed into fixed-length rows, AdamW, cosine LR.

From scratch, training starts with an induction warm-up: rows of random token spans, each said
twice. The second copy is predictable only by finding the first and copying what followed it (an
induction head, Olsson et al. 2022), the circuit that in-context recall needs. On natural text a
tiny model takes far more tokens than a CPU gives to form it; on short repeats it forms in about a
thousand steps, and a share of repeat rows during the corpus phase keeps it."""
from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lmops.data import Corpus
from lmops.data.generate import copy_drill, qa_text


def training_texts(corpus: Corpus, seed: int = 0, split: str = "train") -> list[str]:
    """Every training item as text. Profiles carry their questions (open-book), so the model learns
    to read an answer out of its context, which held-out entities then test."""
    rng = random.Random(seed)
    qa_by_entity: dict[str, list[dict]] = {}
    for q in corpus.qa:
        qa_by_entity.setdefault(q["entity"], []).append(q)
    texts = []
    for doc in corpus.split(corpus.documents, split):
        text = doc["text"]
        if doc["kind"] == "profile":
            for q in rng.sample(qa_by_entity[doc["entity"]], 3):
                text += qa_text(q["question"], q["answer"])
        texts.append(text)
    texts += [f"{inc['text']}\nCategory: {inc['category']}" for inc in corpus.split(corpus.incidents, split)]
    recall = corpus.split(corpus.recall, split)
    texts += [r["context"] + "".join(qa_text(q, a, lead) for q, lead, a in
                                     [(r["question"], r["lead"], r["answer"]), *r.get("more", [])]) for r in recall]
    if split == "train":
        texts += [copy_drill(rng) for _ in range(len(recall) // 2)]
    return texts


def pack(token_lists: list[list[int]], context: int, pad_id: int, rng: random.Random) -> list[list[int]]:
    """Greedy packing of whole items into rows of `context` tokens (pad at the end of a row).
    Items are never cut across rows, so a fact and its question always share a window."""
    return [row for row, _ in pack_rows(token_lists, context, pad_id, rng)]


def pack_rows(token_lists: list[list[int]], context: int, pad_id: int,
              rng: random.Random) -> list[tuple[list[int], int]]:
    """`pack`, each row with its real length: the padding is told apart by position, never by
    `ids == pad_id`, since many released models (SmolLM2 among them) pad with their EOS token, which
    is also the separator between items that training must see."""
    order = list(range(len(token_lists)))
    rng.shuffle(order)
    rows, row = [], []
    for i in order:
        ids = token_lists[i][:context]
        if len(row) + len(ids) > context:
            rows.append((row + [pad_id] * (context - len(row)), len(row)))
            row = []
        row += ids
    if row:
        rows.append((row + [pad_id] * (context - len(row)), len(row)))
    return rows


def batch_tensors(rows: list[tuple[list[int], int]]):
    """(input_ids, attention_mask, labels) of packed rows: the mask and the -100 labels cover exactly
    each row's padding past its real length."""
    import torch

    batch = torch.tensor([r for r, _ in rows])  # (B, T)
    lengths = torch.tensor([n for _, n in rows])
    mask = (torch.arange(batch.shape[1])[None, :] < lengths[:, None]).long()
    return batch, mask, batch.masked_fill(mask == 0, -100)


def repeat_row(rng: random.Random, vocab_size: int, context: int, sep: int, span: tuple[int, int],
               first_id: int = 2) -> list[int]:
    """One row of `context` tokens: [sep, span, span] blocks of random tokens (ids >= `first_id`,
    past the special tokens), span lengths drawn from `span`."""
    row: list[int] = []
    while len(row) < context:
        tokens = [rng.randrange(first_id, vocab_size) for _ in range(rng.randint(*span))]
        row += [sep] + tokens + tokens
    return row[:context]


@dataclass
class TrainResult:
    losses: list[tuple[int, float]] = field(default_factory=list)
    tokens: int = 0  # non-pad tokens trained on
    seconds: float = 0.0


def lr_at(step: int, steps: int, warmup: int, lr: float, decay: bool = True) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    if not decay:
        return lr
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))  # cosine down to 10%


@dataclass(frozen=True)
class TrainConfig:
    """One training run's settings. `repeat_share` of the rows are random-span repeats (`repeat_row`);
    the LR warms up linearly over `warmup` steps, then follows a cosine to 10% (or stays flat,
    `cosine=False`). `checkpoint(step)` is called every `checkpoint_every` steps."""
    context: int
    steps: int
    batch_size: int
    lr: float
    warmup: int = 0
    weight_decay: float = 0.0
    seed: int = 0
    threads: int = 2
    repeat_share: float = 0.0
    repeat_span: tuple[int, int] = (4, 48)
    cosine: bool = True
    checkpoint_every: int = 0
    progress: bool = True
    desc: str = "train"


def train_lm(model, tokenizer, texts: list[str], cfg: TrainConfig,
             checkpoint: Callable[[int], None] | None = None) -> TrainResult:
    """Train `model` in place for `cfg.steps` optimizer steps over packed `texts` (which may be empty
    when every row is a repeat row). Long runs leave usable snapshots through `checkpoint`."""
    import torch
    from tqdm.auto import tqdm

    from lmops.progress import report

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    token_lists = [ids + [eos] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    if not token_lists and cfg.repeat_share < 1:
        raise ValueError("train_lm needs training texts unless every row is a repeat row (repeat_share=1)")
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    result, rows, start = TrainResult(), [], time.perf_counter()
    device = next(model.parameters()).device
    model.train()
    bar = tqdm(range(cfg.steps), desc=cfg.desc, disable=not cfg.progress, unit="step")
    for step in bar:
        n_repeat = sum(rng.random() < cfg.repeat_share for _ in range(cfg.batch_size)) if cfg.repeat_share else 0
        if len(rows) < cfg.batch_size - n_repeat:
            rows += pack_rows(token_lists, cfg.context, pad, rng)
        picked = [(repeat_row(rng, len(tokenizer), cfg.context, eos, cfg.repeat_span), cfg.context)
                  for _ in range(n_repeat)]
        picked += rows[:cfg.batch_size - n_repeat]
        rows = rows[cfg.batch_size - n_repeat:]
        batch, mask, labels = batch_tensors(picked)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.steps, cfg.warmup, cfg.lr, cfg.cosine)
        loss = model(input_ids=batch.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        result.tokens += int((labels != -100).sum())
        result.losses.append((step, round(loss.item(), 4)))
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if cfg.progress:
            report(cfg.desc, step + 1, cfg.steps)
        if checkpoint and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            model.eval()
            checkpoint(step + 1)
            model.train()
    model.eval()
    result.seconds = round(time.perf_counter() - start, 2)
    return result
