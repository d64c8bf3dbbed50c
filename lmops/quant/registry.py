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
from typing import TYPE_CHECKING

from lmops.errors import QuantError

if TYPE_CHECKING:
    from lmops.quant.method import QuantMethod, SchemeSpec

METHODS: dict[type, QuantMethod] = {}  # config type -> handler
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
