"""Quantization: configs (`config`), the in-place verb `quantize_` (`api`), int4 storage and GPTQ
(`int4`), QAT (`qat`), KV-cache quantization (`kv`), artifacts and byte accounting (`artifact`), and
the `quantize` stage (`stage`). Importing this package pulls in no torch: submodules load lazily."""
from lmops.quant.config import QuantError  # noqa: F401
