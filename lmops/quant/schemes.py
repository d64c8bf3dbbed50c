"""The grid: scheme name -> `Scheme` (a method's config plus an optional KV-cache config), built from
the `quantize` params. Every scheme name comes from a registered method (`QuantMethod.schemes`); its
config is the method's `quantize.methods.<name>` section with the scheme's fixed fields on top.
Light: importing this pulls in no torch, so params validation can use it."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from lmops.quant.config import KVCacheConfig, QuantError, Scheme
from lmops.quant.registry import discover, scheme_specs

if TYPE_CHECKING:
    from lmops.params import QuantizeParams


def scheme_names() -> list[str]:
    return list(scheme_specs())


def method_section(p: "QuantizeParams", name: str):
    """The validated `quantize.methods.<name>` config (its defaults where the section is absent)."""
    section = getattr(p.methods, name, None)
    if section is None:
        handler = next(h for h in discover().values() if h.name == name)
        section = handler.config()
    return section


def build_scheme(name: str, p: "QuantizeParams") -> Scheme:
    """The validated `Scheme` for `name`; an unknown name or a bad setting raises QuantError."""
    specs = scheme_specs()
    if name not in specs:
        raise QuantError(f"unknown quantization scheme {name!r}; known: {', '.join(specs)}")
    handler, spec = specs[name]
    weights = dataclasses.replace(method_section(p, handler.name), **spec.fixed)
    kv = None if spec.kv is None else KVCacheConfig(bits=spec.kv, group_size=p.kv.group_size, residual=p.kv.residual)
    return Scheme(name, weights, kv)
