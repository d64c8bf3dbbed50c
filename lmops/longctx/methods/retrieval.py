"""Retrieval: the top-k chunks of the item's own context from LanceDB, best chunk last (nearest the
question), truncated to the trained context. Params: `long_context.retrieval` (top_k, mode, rrf_k)."""
from __future__ import annotations

from dataclasses import dataclass

from lmops.longctx.methods.base import Context, MethodBase
from lmops.longctx.suite import Item
from lmops.model.generate import generate_rows
from lmops.params import LongContextParams


@dataclass(frozen=True)
class RetrievalMethodConfig:
    top_k: int = 3
    mode: str = "hybrid"  # vector, fts or hybrid
    rrf_k: int = 60  # reciprocal-rank fusion constant (hybrid)


class Retrieval(MethodBase):
    name = "retrieval"
    config: RetrievalMethodConfig

    def prepare(self, ctx: Context) -> str | None:
        if ctx.index is None:
            raise ValueError(f"{self.name} needs an index of the items' contexts (Context.index)")
        return super().prepare(ctx)

    def retrieve(self, it: Item) -> list[str]:
        """The top-k chunk texts, best first."""
        c = self.config
        return [h["text"] for h in self.ctx.index.search(it, c.top_k, c.mode, rrf_k=c.rrf_k)]

    def answer(self, items: list[Item]) -> list[str]:
        c = self.ctx
        rows = []
        for it in items:
            context = " ".join(reversed(self.retrieve(it)))  # best chunk last, next to the question
            rows.append(c.row(it, c.ids(context)[-c.room(it):]))
        return generate_rows(c.model, c.tokenizer, rows, c.max_new_tokens, c.batch_size)


def make(lp: LongContextParams) -> Retrieval:
    r = lp.retrieval
    return Retrieval(RetrievalMethodConfig(r.top_k, r.mode, r.rrf_k))
