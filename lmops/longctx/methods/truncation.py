"""Truncation, the baseline: keep the last context tokens that fit the trained context beside the
question (and a chat model's template)."""
from __future__ import annotations

from dataclasses import dataclass

from lmops.longctx.methods.base import MethodBase
from lmops.longctx.suite import Item
from lmops.model.generate import generate_rows
from lmops.params import LongContextParams


@dataclass(frozen=True)
class TruncationConfig:
    """No settings: the window is the trained context less the answer."""


class Truncation(MethodBase):
    name = "truncation"

    def answer(self, items: list[Item]) -> list[str]:
        c = self.ctx
        rows = [c.row(it, c.ids(it.context)[-c.room(it):]) for it in items]  # the context's last tokens
        return generate_rows(c.model, c.tokenizer, rows, c.max_new_tokens, c.batch_size)

    def perplexity_model(self):
        return self.ctx.model, self.ctx.trained  # each token sees at most the trained context


def make(lp: LongContextParams) -> Truncation:
    return Truncation(TruncationConfig())

