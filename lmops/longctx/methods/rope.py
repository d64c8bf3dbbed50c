"""Full context through a RoPE-scaled copy of the model: linear position interpolation, dynamic NTK
or YaRN (`lmops.longctx.rope`), each optionally fine-tuned at the extended length
(`lmops.longctx.finetune`). One registry entry per (type, fine-tuned): `rope_<type>` and
`rope_<type>_ft`; params `long_context.rope` picks the types, `long_context.finetune` the fine-tune
(steps 0 switches the `_ft` variants off)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import get_args

from lmops.longctx.methods.base import Context, MethodBase
from lmops.longctx.rope import RopeConfig, RopeType, scaled_copy
from lmops.longctx.suite import Item
from lmops.model.generate import generate_rows
from lmops.params import LongContextParams

TYPES: tuple[str, ...] = get_args(RopeType)  # linear, dynamic, yarn


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int
    length_multiple: float  # training length, x the trained context
    batch_size: int
    lr: float


@dataclass(frozen=True)
class RopeMethodConfig:
    type: str  # linear, dynamic (NTK) or yarn
    factor: float
    finetune: FinetuneConfig | None = None  # None: scaled only


class RopeScaling(MethodBase):
    config: RopeMethodConfig

    def __init__(self, config: RopeMethodConfig):
        super().__init__(config, f"rope_{config.type}" + ("_ft" if config.finetune else ""))

    def prepare(self, ctx: Context) -> str | None:
        super().prepare(ctx)
        cfg, ft = self.config, self.config.finetune
        self.model = scaled_copy(ctx.model, RopeConfig(cfg.type, cfg.factor, ctx.trained))
        if ft is None:
            return None
        from lmops.longctx.finetune import pi_finetune

        if ctx.corpus is None:
            raise ValueError(f"{self.name} fine-tunes on the corpus: the context has none")
        length = int(ft.length_multiple * ctx.trained)
        res = pi_finetune(self.model, ctx.tokenizer, ctx.corpus, length=length, steps=ft.steps,
                          batch_size=ft.batch_size, lr=ft.lr, seed=ctx.seed, threads=ctx.threads)
        return (f"`{self.name}`: {ft.steps} steps x {ft.batch_size} rows of {length} tokens "
                f"(loss {res.losses[0][1]:.3f} -> {res.losses[-1][1]:.3f}, {res.seconds:.0f} s)")

    def answer(self, items: list[Item]) -> list[str]:
        c = self.ctx
        rows = [c.row(it, c.ids(it.context)) for it in items]
        return generate_rows(self.model, c.tokenizer, rows, c.max_new_tokens, c.batch_size)

    def perplexity_model(self):
        return self.model, None


def make(lp: LongContextParams, rope_type: str, finetuned: bool) -> RopeScaling | None:
    """The variant, or None when params switch it off (type not listed, or no fine-tune steps)."""
    if rope_type not in lp.rope.types or (finetuned and not lp.finetune.steps):
        return None
    f = lp.finetune
    ft = FinetuneConfig(f.steps, f.length_multiple, f.batch_size, f.lr) if finetuned else None
    return RopeScaling(RopeMethodConfig(rope_type, lp.rope.factor, ft))


def variants() -> dict:
    """Registry entries: rope_<type> and rope_<type>_ft for every scaling type."""
    return {f"rope_{t}" + ("_ft" if ft else ""): partial(make, rope_type=t, finetuned=ft)
            for t in TYPES for ft in (False, True)}
