"""The one registry of long-context methods: name -> factory. A factory takes the validated
`long_context` params and returns the method (its config read from its own params section), or None
when params switch it off. The stage runs every method the registry yields, in this order; the names
are the keys of metrics/long_context.json."""
from __future__ import annotations

from collections.abc import Callable

from lmops.longctx.methods import nbce, nbce_ref, retrieval, retrieval_nbce, rope, truncation
from lmops.longctx.methods.base import Method
from lmops.params import LongContextParams

Factory = Callable[[LongContextParams], "Method | None"]

METHODS: dict[str, Factory] = {
    "truncation": truncation.make,
    "nbce": nbce.make,
    "retrieval": retrieval.make,
    "retrieval_nbce": retrieval_nbce.make,
    **rope.variants(),  # rope_<type> and rope_<type>_ft for linear, dynamic (NTK) and yarn
    "nbce_ref": nbce_ref.make,  # NBCE's reference rule (top-p entropy, stickiness, nucleus), beside `nbce`
}


def register(name: str, factory: Factory) -> None:
    """Add a method at run time (a plugin, a test); a taken name is an error, never replaced."""
    if name in METHODS:
        raise ValueError(f"long-context method {name!r} is already registered")
    METHODS[name] = factory


def build_methods(lp: LongContextParams) -> dict[str, Method]:
    """{name: method} for every registered method the params switch on."""
    out = {}
    for name, factory in METHODS.items():
        method = factory(lp)
        if method is None:
            continue
        if method.name != name:
            raise ValueError(f"long-context method registered as {name!r} calls itself {method.name!r}")
        out[name] = method
    return out
