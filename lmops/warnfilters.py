"""Known-harmless library warnings, silenced in ONE place (imported by lmops/__init__.py, so every
`lmops` command, stage, flow and worker process gets it). Each filter names what it hides and why.
Nothing else is hidden: a new warning still shows."""
from __future__ import annotations

import logging
import os
import warnings

# name of the library's logger -> substrings of messages that are harmless here
_LOG_NOISE: dict[str, tuple[str, ...]] = {
    # torchao ships CUDA-only extensions (_C_mxfp8, _C_cutlass_90a) and logs that it cannot load them on
    # a CPU-only machine; lmops uses none of them.
    "torchao": ("_C_mxfp8", "_C_cutlass"),
    # torchao's int matmul kernels want Triton (a GPU compiler); on CPU the fallback is used.
    "torchao.kernel.intmm": ("Detected no triton",),
    # torch's _pytree: torchao registers its Enum configs with register_constant(), which torch now
    # calls deprecated (natively supported); torchao's business, no effect on results.
    "torch.utils._pytree": ("is an Enum subclass and is now natively supported",),
    # bitsandbytes tries optional hub kernels (the `kernels` package, not installed: it downloads code)
    # for its CPU 4-bit matmul and falls back to its built-in one.
    "bitsandbytes.backends.cpu.ops": ("No module named 'kernels'",),
    # Prefect's temporary server tries to phone home; this machine is offline (analytics are also
    # switched off below).
    "prefect.server.services.telemetry": ("Failed to send telemetry",),
}


class _DropKnown(logging.Filter):
    def __init__(self, needles: tuple[str, ...]):
        super().__init__()
        self.needles = needles

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True
        return not any(n in message for n in self.needles)


def install() -> None:
    for name, needles in _LOG_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnown) for f in logger.filters):
            logger.addFilter(_DropKnown(needles))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # the telemetry above, at its source
    # lance / lancedb deprecation notices about their own APIs (lmops calls the current ones; the
    # notices come from lancedb's internals and pylance's dataset shims).
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"lance(db)?(\.|$)")
    warnings.filterwarnings("ignore", message=r".*(table_names\(\)|create_fts_index) is deprecated")
    # torch.jit.script_method is deprecated in favour of torch.compile; raised by transformers' and
    # torchao's module definitions at import time, not by lmops code.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script_method` is deprecated", category=DeprecationWarning)

