"""The built-in drift descriptors, one module each; importing this package registers them.

`MODULES` is the registration order, so the order of the scores in a window record. A new
descriptor: a new module here that calls `lmops.monitor.descriptor.register`, plus its name in
`MODULES` (see docs/extending.md, "A drift descriptor").
"""
from importlib import import_module

MODULES = (
    "text",  # prompt_length, prompt_words, prompt_nonletter, response_length, response_nonletter
    "quality",  # response_loglik, output_tokens, latency_ms
    "unknown_terms",  # prompt_unknown_terms
    "embedding",  # embedding
)

for _module in MODULES:
    import_module(f"{__name__}.{_module}")
