"""One registry for quantization methods: config type -> `QuantMethod` handler (torchao/peft style).

A method is one module in `lmops.quant.methods` holding its config dataclass (validating itself in
`__post_init__`), its handler (how it is built or applied, saved, loaded and described) and one
`register_method(Config, Handler())` line. `quantize_`, `build_variant`, `save_variant`, `load_variant`,
the scheme grid and the `quantize.methods` params section all dispatch through this registry.

Light: importing this (and the method modules) pulls in no torch; handlers import it when they run.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
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
        from lmops.model.build import load_model

        model, tokenizer = load_model(ctx.base)  # float32
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


METHODS: dict[type, QuantMethod] = {}
_discovered = False


def register_method(config_type: type, handler: QuantMethod) -> QuantMethod:
    """Register `handler` for configs of `config_type` (a dataclass). Its name must be new, and so must
    its scheme names: a clash is an error, not a silent override."""
    if not dataclasses.is_dataclass(config_type):
        raise QuantError(f"{config_type.__name__} must be a dataclass to be a quantization config")
    if not handler.name:
        raise QuantError(f"{type(handler).__name__} needs a name (its quantize.methods section)")
    for other in METHODS.values():
        if other.config is config_type or other.config.__name__ == config_type.__name__:
            continue  # re-registration (a reloaded module) replaces
        if other.name == handler.name:
            raise QuantError(f"quantization method name {handler.name!r} is taken by {type(other).__name__}")
        if clash := set(other.schemes) & set(handler.schemes):
            raise QuantError(f"scheme(s) {sorted(clash)} of {handler.name!r} already belong to {other.name!r}")
    for key in [k for k, h in METHODS.items() if k.__name__ == config_type.__name__]:
        del METHODS[key]
    handler.config = config_type
    METHODS[config_type] = handler
    return handler


def discover() -> dict[type, QuantMethod]:
    """Import every module of `lmops.quant.methods` once (each registers itself); returns the registry."""
    global _discovered
    if not _discovered:
        from lmops.quant import methods

        for info in pkgutil.iter_modules(methods.__path__):
            importlib.import_module(f"{methods.__name__}.{info.name}")
        _discovered = True
    return METHODS


def method_for(config) -> QuantMethod:
    handler = discover().get(type(config))
    if handler is None:
        raise QuantError(f"no quantization method registered for {type(config).__name__}; known: "
                         f"{', '.join(t.__name__ for t in METHODS)}")
    return handler


def method_named(config_name: str) -> QuantMethod:
    """The handler of a saved variant, by the config type name its quant.json records ("weights")."""
    for config_type, handler in discover().items():
        if config_type.__name__ == config_name:
            return handler
    raise QuantError(f"no quantization method registered for {config_name!r} (from quant.json); known: "
                     f"{', '.join(t.__name__ for t in METHODS)}")


def scheme_specs() -> dict[str, tuple[QuantMethod, SchemeSpec]]:
    """Every scheme name of the grid -> (its method's handler, its spec)."""
    return {name: (h, spec) for h in discover().values() for name, spec in h.schemes.items()}
