"""CTranslate2 (OpenNMT): a C++ inference engine for Transformers, int8 / int16 / float32 on CPU.

Export: CTranslate2's own `TransformersConverter` (it reads the Hugging Face directory; it works with
transformers 5), quantized at conversion (`int8` = int8 weights, float32 activations, per-row scales;
the tied embedding and LM head are int8 too). Logits: `Generator.forward_batch`. Decoding:
`Generator.generate_tokens` with its own KV cache.
"""
from __future__ import annotations

from pathlib import Path

from lmops.engines.base import EngineSpec, Runner


class CT2Runner(Runner):
    def __init__(self, path: Path, threads: int):
        import ctranslate2
        from transformers import AutoTokenizer

        self.gen = ctranslate2.Generator(str(path), device="cpu", intra_threads=threads, inter_threads=1)
        self.tok = AutoTokenizer.from_pretrained(path)

    def logits(self, ids: list[int]):
        import numpy as np

        return np.asarray(self.gen.forward_batch([list(ids)]))[0]

    def prefill(self, ids: list[int]) -> None:
        self.gen.forward_batch([list(ids)])

    def stream(self, ids: list[int], max_new: int, temperature: float = 0.0, min_new: int = 0, logprobs: bool = True):
        sampling = {"sampling_topk": 0, "sampling_temperature": temperature} if temperature > 0 else {"sampling_topk": 1}
        for step in self.gen.generate_tokens(self.tok.convert_ids_to_tokens(list(ids)), max_length=max_new,
                                             min_length=min_new, return_log_prob=logprobs, **sampling):
            yield step.token_id, step.log_prob if logprobs else None


class CTranslate2(EngineSpec):
    name = "ctranslate2"
    module = "ctranslate2"
    package = "ctranslate2==4.8.5"

    def write(self, src: Path, out: Path, bits: int, group_size: int, variant: Path | None = None) -> None:
        from ctranslate2.converters import TransformersConverter

        TransformersConverter(str(src)).convert(str(out), quantization=self.bits[bits], force=True)

    def open_dir(self, path: Path, meta: dict, threads: int) -> Runner:
        return CT2Runner(path, threads)
