"""The engines lmops exports to, benchmarks against and can serve through: one line per engine.

Engine modules are imported only when named, and their packages only when used, so validating a
name never needs the engine installed."""
from __future__ import annotations

import importlib

from lmops.engines.base import EngineError, EngineSpec

# name -> "module:class"
ENGINES: dict[str, str] = {
    "ctranslate2": "lmops.engines.ctranslate2:CTranslate2",
    "onnxruntime_genai": "lmops.engines.onnxruntime_genai:OrtGenAI",
}


def engine_named(name: str) -> EngineSpec:
    if name not in ENGINES:
        raise EngineError(f"unknown engine {name!r}; known engines: {', '.join(sorted(ENGINES))}")
    module, _, cls = ENGINES[name].partition(":")
    return getattr(importlib.import_module(module), cls)()


def parse_build(spec: str) -> tuple[str, int]:
    """"engine:bits" (e.g. "onnxruntime_genai:int4", "ctranslate2:8") -> (engine, bits), checked."""
    name, _, bits = spec.partition(":")
    engine = engine_named(name)
    if not bits:
        raise EngineError(f"engine build {spec!r} names no bit width: write {name}:<bits>, one of "
                          f"{', '.join(f'int{b}' if b < 16 else f'fp{b}' for b in sorted(engine.bits))}")
    digits = bits.removeprefix("int").removeprefix("fp")
    if not digits.isdigit():
        raise EngineError(f"engine build {spec!r}: bit width {bits!r} is not a number (e.g. int8, int4, fp32)")
    engine.check_bits(int(digits))
    return name, int(digits)
