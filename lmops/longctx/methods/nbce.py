"""NBCE over token chunks of the whole context (`lmops.longctx.nbce`), each chunk beside the
question in its own batch row. Params: `long_context.nbce`."""
from __future__ import annotations

from dataclasses import dataclass

from lmops.longctx.chunking import ChunkConfig, chunk_ids
from lmops.longctx.methods.base import Context, MethodBase
from lmops.longctx.nbce import NBCEConfig, nbce_generate
from lmops.longctx.suite import Item
from lmops.params import LongContextParams


@dataclass(frozen=True)
class NBCEMethodConfig:
    beta: float
    chunk_tokens: int = 0  # context tokens per row; 0 = as many as fit beside the question
    overlap: int = 32
    sample: bool = False
    temperature: float = 1.0


def decoding(ctx: Context, beta: float, sample: bool, temperature: float) -> NBCEConfig:
    return NBCEConfig(beta, ctx.max_new_tokens, sample, temperature, ctx.seed)


class NBCE(MethodBase):
    name = "nbce"
    config: NBCEMethodConfig

    def prepare(self, ctx: Context) -> str | None:
        super().prepare(ctx)
        c = self.config
        self.decoding = decoding(ctx, c.beta, c.sample, c.temperature)
        return None

    def chunks(self, it: Item) -> list[list[int]]:
        """Token chunks of the context, each leaving room for the prompt and the answer."""
        c = self.ctx
        size = c.room(it)
        size = min(size, self.config.chunk_tokens) if self.config.chunk_tokens else size
        return chunk_ids(c.ids(it.context), ChunkConfig(size, min(self.config.overlap, size - 1), c.trained))

    def answer(self, items: list[Item]) -> list[str]:
        c = self.ctx
        return [nbce_generate(c.model, c.tokenizer, self.chunks(it), c.frame(it)[1], self.decoding, head=c.frame(it)[0])
                for it in items]


def make(lp: LongContextParams) -> NBCE:
    n = lp.nbce
    return NBCE(NBCEMethodConfig(n.beta, n.chunk_tokens, n.overlap, n.sample, n.temperature))
