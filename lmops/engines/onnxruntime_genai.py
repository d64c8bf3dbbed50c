"""ONNX Runtime GenAI (Microsoft): an ONNX graph with a fused attention (GroupQueryAttention), its KV
cache managed by the runtime, on CPU or CUDA.

Export: ORT GenAI's model builder (`python -m onnxruntime_genai.models.builder`, run in a child process;
it works with transformers 5): fp32, or int8 / int4 weight-only `MatMulNBits` in blocks of `group_size`
(RTN, symmetric; the LM head too). On CPU the builder's default accuracy level 4 also quantizes each
MatMul's activations to int8 on the fly. Logits: the `logits` output after `append_tokens`.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from lmops.engines.base import EngineSpec, Runner
from lmops.errors import InputError


class OrtGenAIRunner(Runner):
    def __init__(self, path: Path, threads: int):
        import onnxruntime_genai as og

        config = og.Config(str(path))
        config.clear_providers()  # the CPU
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
        self.og = og
        self.model = og.Model(config)

    def _generator(self, total: int, temperature: float = 0.0, min_total: int = 0):
        params = self.og.GeneratorParams(self.model)
        total = min(total, self.context)  # a full-context window needs no room for one more token
        opts = {"max_length": total, "min_length": min(min_total, total), "do_sample": temperature > 0}
        if temperature > 0:
            opts.update(temperature=temperature, top_k=0, top_p=1.0)
        params.set_search_options(**opts)
        return self.og.Generator(self.model, params)

    def logits(self, ids: list[int]):
        import numpy as np

        g = self._generator(len(ids) + 1)
        g.append_tokens(np.asarray([ids], dtype=np.int32))
        return np.asarray(g.get_output("logits"))[0]

    def prefill(self, ids: list[int]) -> None:
        import numpy as np

        self._generator(len(ids) + 1).append_tokens(np.asarray([ids], dtype=np.int32))

    def stream(self, ids: list[int], max_new: int, temperature: float = 0.0, min_new: int = 0, logprobs: bool = True):
        import numpy as np

        g = self._generator(len(ids) + max_new, temperature, len(ids) + min_new)
        g.append_tokens(np.asarray([ids], dtype=np.int32))
        while not g.is_done():
            g.generate_next_token()  # runs the model on the last token, then picks the next one
            token = int(g.get_next_tokens()[0])
            lp = None
            if logprobs:  # the logits the token was picked from (the output of that run)
                last = np.asarray(g.get_output("logits"))[0, -1]  # (vocab,) float32
                top = last.max()
                lp = float(last[token] - top - np.log(np.exp(last - top).sum()))
            yield token, lp


class OrtGenAI(EngineSpec):
    name = "onnxruntime_genai"
    module = "onnxruntime_genai"
    package = "onnxruntime-genai==0.18.0"

    def write(self, src: Path, out: Path, bits: int, group_size: int) -> None:
        with tempfile.TemporaryDirectory(prefix="lmops-ortgenai-") as cache:
            cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-m", str(src), "-i", str(src),
                   "-o", str(out), "-p", self.bits[bits], "-e", "cpu", "-c", cache]
            if bits < 16:
                cmd += ["--extra_options", f"block_size={group_size}"]
            done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode or not (out / "model.onnx").is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise InputError(f"the ONNX Runtime GenAI builder could not export {src}: {' | '.join(tail)}")
        from transformers import AutoConfig

        AutoConfig.from_pretrained(src).save_pretrained(out)  # the model's config.json (a model directory)

    def open_dir(self, path: Path, meta: dict, threads: int) -> Runner:
        return OrtGenAIRunner(path, threads)
