"""NBCE as its reference defines it (Su Jianlin, bojone/NBCE; `lmops.longctx.nbce.NBCERefConfig`):
top-p-truncated entropy picks the chunk, the previously chosen chunk gets a stickiness bonus eta, and
the naive-Bayes combination applies only inside the no-context row's nucleus. Same chunks as `nbce`
(`long_context.nbce` chunk_tokens, overlap, sample, temperature), so the two rules are compared on the
same rows. Params: `long_context.nbce_ref` (beta, eta, top_p)."""
from __future__ import annotations

from dataclasses import dataclass

from lmops.longctx.methods.base import Context
from lmops.longctx.methods.nbce import NBCE, NBCEMethodConfig
from lmops.longctx.nbce import NBCERefConfig
from lmops.params import LongContextParams


@dataclass(frozen=True)
class NBCERefMethodConfig(NBCEMethodConfig):
    eta: float = 0.1
    top_p: float = 0.95


class NBCERef(NBCE):
    name = "nbce_ref"
    config: NBCERefMethodConfig

    def prepare(self, ctx: Context) -> str | None:
        self.ctx = ctx
        c = self.config
        self.decoding = NBCERefConfig(c.beta, ctx.max_new_tokens, c.sample, c.temperature, ctx.seed, eta=c.eta,
                                      top_p=c.top_p)
        return None


def make(lp: LongContextParams) -> NBCERef:
    n, r = lp.nbce, lp.nbce_ref
    return NBCERef(NBCERefMethodConfig(r.beta, n.chunk_tokens, n.overlap, n.sample, n.temperature, r.eta, r.top_p))
