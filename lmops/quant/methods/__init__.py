"""Quantization methods, one module each (config + handler + `register_method` line). Every module in
this package is imported by `lmops.quant.registry.discover()`; none may import torch at module level."""
