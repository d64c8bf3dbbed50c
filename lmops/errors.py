"""Every error lmops raises on purpose derives from `LmopsError`: the CLI turns any of them into one
line naming the problem (exit code 2, no traceback). Anything else reaching the CLI is a bug."""
from __future__ import annotations


class LmopsError(Exception):
    """A problem the user can fix: bad params, a missing or corrupt file, an impossible request."""


class ParamsError(LmopsError, ValueError):
    """A bad params.yaml: the message names the file and every offending key."""


class InputError(LmopsError, RuntimeError):
    """A missing or corrupt input file; the message names the file."""


class QuantError(LmopsError, ValueError):
    """A bad quantization request (unknown scheme, invalid bit width or group size, nothing to quantize)."""


class EngineError(LmopsError, ValueError):
    """An unknown inference engine, or a bit width the engine does not offer (lmops.engines)."""


class EngineNotInstalled(EngineError):
    """An engine's Python package is missing; the message says how to install it."""
