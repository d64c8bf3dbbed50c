"""What every long-context method is: a name, a config, `prepare(ctx)` for one-time work, and
`answer(items)`. The `Context` carries what all methods share (the base model, its tokenizer and
trained context, the answer length, the corpus for fine-tuning, the chunk indexes)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from lmops.longctx.suite import Item

CONTEXT_MARK = "\u2063CONTEXT\u2063"  # stands for the context while a chat prompt is split around it


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
    chat: bool = False  # ask through the tokenizer's chat template (an instruct model)

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def budget(self) -> int:
        """Prompt tokens that fit the trained context with room for the answer."""
        return self.trained - self.max_new_tokens

    def frame(self, item: Item) -> tuple[list[int], list[int]]:
        """(head, tail): the tokens every method puts before and after an item's context. Plain: no
        head, the QA text after. Chat: the template's opening before, and after it the question, the
        instruction, the close of the user turn and the answer's lead opening the assistant turn."""
        if not self.chat:
            return [], self.ids(item.prompt)
        from lmops.longctx.suite import answer_lead
        from lmops.model.evaluate import chat_qa_prompt

        text = chat_qa_prompt(self.tokenizer, CONTEXT_MARK, item.question, item.lead or answer_lead(item.question))
        head, tail = text.split(CONTEXT_MARK)
        return self.ids(head), self.ids(tail)

    def room(self, item: Item) -> int:
        """Context tokens that fit beside the item's frame and the answer."""
        head, tail = self.frame(item)
        return self.budget() - len(head) - len(tail)

    def row(self, item: Item, context_ids: list[int]) -> list[int]:
        head, tail = self.frame(item)
        return head + list(context_ids) + tail


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
