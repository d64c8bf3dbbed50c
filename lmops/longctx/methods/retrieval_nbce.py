"""Retrieval + NBCE: the top-k retrieved chunks, one NBCE row each. Params: `long_context.retrieval`
(top_k, mode, rrf_k) and `long_context.nbce` (beta, sample, temperature)."""
from __future__ import annotations

from dataclasses import dataclass

from lmops.longctx.methods.base import Context
from lmops.longctx.methods.nbce import decoding
from lmops.longctx.methods.retrieval import Retrieval, RetrievalMethodConfig
from lmops.longctx.nbce import nbce_generate
from lmops.longctx.suite import Item
from lmops.params import LongContextParams


@dataclass(frozen=True)
class RetrievalNBCEConfig(RetrievalMethodConfig):
    beta: float = 0.25
    sample: bool = False
    temperature: float = 1.0


class RetrievalNBCE(Retrieval):
    name = "retrieval_nbce"
    config: RetrievalNBCEConfig

    def prepare(self, ctx: Context) -> str | None:
        super().prepare(ctx)
        c = self.config
        self.decoding = decoding(ctx, c.beta, c.sample, c.temperature)
        return None

    def answer(self, items: list[Item]) -> list[str]:
        c = self.ctx
        return [nbce_generate(c.model, c.tokenizer, self.retrieve(it), c.frame(it)[1], self.decoding, head=c.frame(it)[0])
                for it in items]


def make(lp: LongContextParams) -> RetrievalNBCE:
    r, n = lp.retrieval, lp.nbce
    return RetrievalNBCE(RetrievalNBCEConfig(r.top_k, r.mode, r.rrf_k, n.beta, n.sample, n.temperature))
