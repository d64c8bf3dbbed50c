"""The long-context methods, compared on the same items. Each maps (runner, items) to answers:

- truncation: keep the last tokens that fit the trained context (the baseline);
- full: the whole prompt through a RoPE-scaled model (`rope_<type>` and `rope_<type>_ft`);
- nbce: NBCE over token chunks of the whole context;
- retrieval: the top-k chunks from LanceDB, best chunk nearest the question;
- retrieval_nbce: NBCE over the top-k retrieved chunks.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lmops.longctx.chunking import ChunkConfig, chunk_ids
from lmops.longctx.nbce import NBCEConfig, nbce_generate
from lmops.longctx.suite import Item
from lmops.model.generate import generate_rows


@dataclass
class Runner:
    model: object  # the base model, trained context
    tokenizer: object
    trained: int
    max_new_tokens: int
    nbce: NBCEConfig
    nbce_overlap: int
    nbce_chunk: int = 0  # context tokens per NBCE row; 0 = as many as fit
    index: object = None  # ChunkIndex for the items being answered
    group_by_item: bool = False  # passkey: each item searches only its own haystack
    top_k: int = 3
    mode: str = "hybrid"
    batch_size: int = 16  # passkey items come grouped by length, so batches pad little
    scaled: dict[str, object] = field(default_factory=dict)  # method name -> RoPE-scaled model

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def budget(self) -> int:
        """Prompt tokens that fit the trained context with room for the answer."""
        return self.trained - self.max_new_tokens


def truncation(r: Runner, items: list[Item]) -> list[str]:
    rows = [(r.ids(it.context) + r.ids(it.prompt))[-r.budget():] for it in items]
    return generate_rows(r.model, r.tokenizer, rows, r.max_new_tokens, r.batch_size)


def full(r: Runner, items: list[Item], name: str) -> list[str]:
    rows = [r.ids(it.context) + r.ids(it.prompt) for it in items]
    return generate_rows(r.scaled[name], r.tokenizer, rows, r.max_new_tokens, r.batch_size)


def nbce_chunks(r: Runner, it: Item) -> list[list[int]]:
    """Token chunks of the context, each leaving room for the prompt and the answer."""
    size = r.budget() - len(r.ids(it.prompt))
    size = min(size, r.nbce_chunk) if r.nbce_chunk else size
    return chunk_ids(r.ids(it.context), ChunkConfig(size, min(r.nbce_overlap, size - 1), r.trained))


def nbce(r: Runner, items: list[Item]) -> list[str]:
    return [nbce_generate(r.model, r.tokenizer, nbce_chunks(r, it), it.prompt, r.nbce) for it in items]


def retrieve(r: Runner, it: Item) -> list[str]:
    if r.index is None:
        raise ValueError("retrieval methods need an index")
    hits = r.index.search(it.question, r.top_k, r.mode, group=it.id if r.group_by_item else None)
    return [h["text"] for h in hits]


def retrieval(r: Runner, items: list[Item]) -> list[str]:
    rows = []
    for it in items:
        context = " ".join(reversed(retrieve(r, it)))  # best chunk last, next to the question
        rows.append((r.ids(context) + r.ids(it.prompt))[-r.budget():])
    return generate_rows(r.model, r.tokenizer, rows, r.max_new_tokens, r.batch_size)


def retrieval_nbce(r: Runner, items: list[Item]) -> list[str]:
    return [nbce_generate(r.model, r.tokenizer, retrieve(r, it), it.prompt, r.nbce) for it in items]


Method = Callable[[Runner, list[Item]], list[str]]
BASE_METHODS: dict[str, Method] = {"truncation": truncation, "nbce": nbce, "retrieval": retrieval,
                                   "retrieval_nbce": retrieval_nbce}


def methods_for(r: Runner) -> dict[str, Method]:
    """The base methods plus one full-context method per RoPE-scaled model in the runner."""
    return {**BASE_METHODS, **{name: functools.partial(full, name=name) for name in r.scaled}}


def run_method(fn: Method, r: Runner, items: list[Item]) -> tuple[list[str], float]:
    """Answers and the mean wall-clock milliseconds per query."""
    start = time.perf_counter()
    answers = fn(r, items)
    return answers, 1000 * (time.perf_counter() - start) / max(1, len(items))
