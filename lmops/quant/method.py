"""The handler base class of a quantization method: how one method turns the base model into a saved,
reloadable variant (see `lmops.quant.registry` for how handlers are registered and found).

Kept apart from the registry so that params validation, which reads the registry, never reaches the
build/save/load code below; handlers import torch and friends only when they run."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmops.errors import QuantError

TORCH_FORMAT, HF_FORMAT = "torch", "hf"


@dataclass(frozen=True)
class SchemeSpec:
    """A named scheme of the grid built on a method: `fixed` fields override the method's params
    section (what the scheme's name promises, e.g. fp32's dtype); `kv` quantizes the KV cache too, at
    these bits, with the `quantize.kv` settings."""
    fixed: dict = field(default_factory=dict)
    kv: int | None = None


def scheme(kv: int | None = None, **fixed) -> SchemeSpec:
    return SchemeSpec(fixed, kv)


class QuantMethod:
    """How one method turns the base model into a saved, reloadable variant. Subclass, set `name` (its
    `quantize.methods.<name>` params section) and `schemes`, and override what differs:
    - `apply(model, config, calib)`: the in-place transform `quantize_` runs (weight-only methods), or
    - `build(config, ctx)`: (model, tokenizer) from `ctx.base` (default: load in float32, then `apply`);
    - `fmt`: "torch" (a state dict + `skeleton` to rebuild custom modules) or "hf" (`save_pretrained`);
    - `save(model, tokenizer, out)` / `load(model_dir, meta)`: only for another on-disk format;
    - `skeleton(model, meta)`: put custom modules back into a float skeleton before the state dict loads;
    - `save_meta(model)`: what `skeleton` will need, stored in quant.json;
    - `describe(config)`: the settings reported in quant.json (default: every config field)."""
    name: str = ""
    config: type = object
    schemes: dict[str, SchemeSpec] = {}
    fmt: str = TORCH_FORMAT

    def apply(self, model, config, calib: list):
        raise QuantError(f"quantization method {self.name!r} has no in-place transform: build it with build_variant")

    def build(self, config, ctx) -> tuple:
        from lmops.quant.build import load_base

        model, tokenizer = load_base(ctx)  # float32, on the resolved device
        model.eval()
        return self.apply(model, config, ctx.calib), tokenizer

    def save_meta(self, model) -> dict:
        return {}

    def skeleton(self, model, meta: dict) -> None:
        pass

    def save(self, model, tokenizer, out: Path) -> dict:
        from lmops.quant import artifact

        save = artifact.save_hf if self.fmt == HF_FORMAT else artifact.save_torch
        return {**save(model, tokenizer, out), **self.save_meta(model)}

    def load(self, model_dir: Path, meta: dict) -> tuple:
        from lmops.quant import artifact

        if meta["format"] == HF_FORMAT:
            return artifact.load_hf(model_dir)
        return artifact.load_torch(model_dir, meta, self.skeleton)

    def describe(self, config) -> dict[str, Any]:
        return dataclasses.asdict(config)
