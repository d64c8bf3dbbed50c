"""What every long-context method is: a name, a config, `prepare(ctx)` for one-time work, and
`answer(items)`. The `Context` carries what all methods share (the base model, its tokenizer and
trained context, the answer length, the corpus for fine-tuning, the chunk indexes)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from lmops.longctx.suite import Item


@dataclass(frozen=True)
class Context:
    model: Any  # the base model, trained context
    tokenizer: Any
    trained: int  # the context the model was trained with, in tokens
    max_new_tokens: int
    corpus: Any = None  # lmops.data.Corpus: training text for the fine-tuned variants
    index: Any = None  # lmops.longctx.retrieval.Haystacks: where each item's context is indexed
    seed: int = 0
    threads: int = 1
    batch_size: int = 16  # passkey items come grouped by length, so batches pad little

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def budget(self) -> int:
        """Prompt tokens that fit the trained context with room for the answer."""
        return self.trained - self.max_new_tokens


@runtime_checkable
class Method(Protocol):
    name: str
    config: Any  # the method's own frozen dataclass, built from its params section

    def prepare(self, ctx: Context) -> str | None:
        """One-time work before any item (scale or fine-tune a model, check an index is there).
        Returns a line for the report's notes, or None."""

    def answer(self, items: list[Item]) -> list[str]:
        """One answer per item, in order."""

    def perplexity_model(self) -> tuple[Any, int | None] | None:
        """(model, window) to score perplexity by position with (window None: the whole sequence at
        once), or None for a method that is not a single language model."""


class MethodBase:
    """The usual shape: `prepare` keeps the context; no perplexity unless a subclass says so."""
    name: str = ""
    ctx: Context

    def __init__(self, config: Any = None, name: str | None = None):
        self.config = config
        if name is not None:
            self.name = name

    def prepare(self, ctx: Context) -> str | None:
        self.ctx = ctx
        return None

    def answer(self, items: list[Item]) -> list[str]:
        raise NotImplementedError

    def perplexity_model(self) -> tuple[Any, int | None] | None:
        return None
