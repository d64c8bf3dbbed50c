"""The engines lmops exports to, benchmarks against and can serve through: one registration each.

A registration names the engine's class ("module:class", imported only when the engine is used) and
the bit widths it offers (bit width -> the engine's own type name). Validating a name (params.yaml
`quantize.engines`) reads this table only: no engine module or package is imported."""
from __future__ import annotations

import importlib
from typing import NamedTuple

from lmops.errors import EngineError


class Registration(NamedTuple):
    target: str  # "module:class" of the engine's EngineSpec subclass
    bits: dict[int, str]


ENGINES: dict[str, Registration] = {
    "ctranslate2": Registration("lmops.engines.ctranslate2:CTranslate2", {32: "float32", 16: "int16", 8: "int8"}),
    "onnxruntime_genai": Registration("lmops.engines.onnxruntime_genai:OrtGenAI", {32: "fp32", 8: "int8", 4: "int4"}),
}


def registration(name: str) -> Registration:
    if name not in ENGINES:
        raise EngineError(f"unknown engine {name!r}; known engines: {', '.join(sorted(ENGINES))}")
    return ENGINES[name]


def engine_named(name: str):
    """The engine's EngineSpec (lmops.engines.base), its bit widths from the registration."""
    reg = registration(name)
    module, _, cls = reg.target.partition(":")
    spec = getattr(importlib.import_module(module), cls)()
    spec.name, spec.bits = name, dict(reg.bits)
    return spec


def check_bits(name: str, bits: int) -> str:
    offered = registration(name).bits
    if bits not in offered:
        raise EngineError(f"engine {name!r} offers {sorted(offered)} bits, not {bits}")
    return offered[bits]


def parse_build(spec: str) -> tuple[str, int]:
    """"engine:bits" (e.g. "onnxruntime_genai:int4", "ctranslate2:8") -> (engine, bits), checked."""
    name, _, bits = spec.partition(":")
    offered = registration(name).bits
    if not bits:
        labels = ", ".join(f"int{b}" if b < 16 else f"fp{b}" for b in sorted(offered))
        raise EngineError(f"engine build {spec!r} names no bit width: write {name}:<bits>, one of {labels}")
    digits = bits.removeprefix("int").removeprefix("fp")
    if not digits.isdigit():
        raise EngineError(f"engine build {spec!r}: bit width {bits!r} is not a number (e.g. int8, int4, fp32)")
    check_bits(name, int(digits))
    return name, int(digits)
