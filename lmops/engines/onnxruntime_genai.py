"""ONNX Runtime GenAI (Microsoft): an ONNX graph with a fused attention (GroupQueryAttention), its KV
cache managed by the runtime, on CPU or CUDA.

Export: ORT GenAI's model builder (`python -m onnxruntime_genai.models.builder`, run in a child process;
it works with transformers 5): fp32, or int8 / int4 weight-only `MatMulNBits` in blocks of `group_size`
(RTN, symmetric; the LM head too). On CPU the builder's default accuracy level 4 also quantizes each
MatMul's activations to int8 on the fly. Logits: the `logits` output after `append_tokens`.

An lmops int4 variant (w4_rtn, w4_gptq, qat_w4) exported at int4 keeps its own codes: the builder
writes asymmetric blocks of the variant's group size, then `inject_codes` overwrites each MatMulNBits'
codes, scales and zero points with the variant's (MatMulNBits takes float zero points, so lmops'
fractional zero point is kept, though ONNX Runtime runs those on a slow path; a variant with whole-code
zero points, `w4_gptq_iz`, gets the uint4 zero points of its fast kernels), and the embedding and LM
head stay float (the variant's dequantized int8 table). The export then computes the variant's weights,
not a second rounding of them.
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

    def write(self, src: Path, out: Path, bits: int, group_size: int, variant: Path | None = None) -> None:
        codes = int4_modules(variant) if variant is not None and bits == 4 else None
        with tempfile.TemporaryDirectory(prefix="lmops-ortgenai-") as cache:
            cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-m", str(src), "-i", str(src),
                   "-o", str(out), "-p", self.bits[bits], "-e", "cpu", "-c", cache]
            if codes:
                group_size = next(iter(codes.values())).group_size
                cmd += ["--extra_options", f"block_size={group_size}", "is_symmetric=false",
                        "nodes_to_exclude=/lm_head/MatMul,/model/embed_tokens/Gather"]
            elif bits < 16:
                cmd += ["--extra_options", f"block_size={group_size}"]
            done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode or not (out / "model.onnx").is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise InputError(f"the ONNX Runtime GenAI builder could not export {src}: {' | '.join(tail)}")
        if codes:
            inject_codes(out, codes)
        from transformers import AutoConfig

        AutoConfig.from_pretrained(src).save_pretrained(out)  # the model's config.json (a model directory)

    def open_dir(self, path: Path, meta: dict, threads: int) -> Runner:
        return OrtGenAIRunner(path, threads)


# The builder's fused projections -> the Hugging Face linears they stack (rows in this order).
FUSED = {"attn.qkv_proj": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
         "attn.o_proj": ["self_attn.o_proj"], "mlp.gate_up_proj": ["mlp.gate_proj", "mlp.up_proj"]}


def int4_modules(variant: Path) -> dict:
    """{module name: Int4Linear} of an lmops variant ({} when it has none: not an int4 variant)."""
    from lmops.quant.artifact import load_variant
    from lmops.quant.int4 import Int4Linear

    model, _, _ = load_variant(variant)
    return {name: m for name, m in model.named_modules() if isinstance(m, Int4Linear) and name != "lm_head"}


def inject_codes(out: Path, modules: dict) -> int:
    """Overwrite each MatMulNBits initializer of the export in `out` with the codes, scales and zero
    points (uint4 when they are whole codes, else float) of the lmops modules it stands for; returns how many nodes were rewritten. A node
    whose modules are missing, or whose shape or block size differs, is an error naming it."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from lmops.quant.int4 import unpack_nibbles

    graph_path = out / "model.onnx"
    model = onnx.load(str(graph_path), load_external_data=True)
    inits = {t.name: t for t in model.graph.initializer}
    done = 0
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        stem = node.input[1].removesuffix(".MatMul.weight_Q4")  # model.layers.3.attn.qkv_proj
        prefix, _, proj = stem.partition(".attn.") if ".attn." in stem else stem.partition(".mlp.")
        key = ("attn." if ".attn." in stem else "mlp.") + proj
        names = [f"{prefix}.{m}" for m in FUSED.get(key, [key])]
        if any(n not in modules for n in names):
            raise InputError(f"{graph_path}: MatMulNBits {node.name} stands for {', '.join(names)}, "
                             "which the lmops variant does not hold as int4")
        parts = [modules[n] for n in names]
        q = np.concatenate([unpack_nibbles(m.qweight).numpy() for m in parts]).astype(np.uint8)  # (N, K)
        scale = np.concatenate([m.scale.float().numpy() for m in parts]).astype(np.float32)  # (N, K / group)
        zero = np.concatenate([m.zero.float().numpy() for m in parts]).astype(np.float32)
        n, k, block = attrs["N"], attrs["K"], attrs["block_size"]
        if q.shape != (n, k) or block != parts[0].group_size:
            raise InputError(f"{graph_path}: MatMulNBits {node.name} is {n}x{k} in blocks of {block}, the lmops "
                             f"modules {q.shape[0]}x{q.shape[1]} in groups of {parts[0].group_size}")
        packed = (q[:, 0::2] | (q[:, 1::2] << 4)).reshape(n, k // block, block // 2)  # low nibble first
        if np.array_equal(zero, np.round(zero)):  # whole codes (w4_gptq_iz): uint4, the fast kernels' form
            z = np.zeros((n, -(-zero.shape[1] // 2) * 2), np.uint8)
            z[:, :zero.shape[1]] = zero.astype(np.uint8)
            zero = z[:, 0::2] | (z[:, 1::2] << 4)  # two blocks per byte, the low nibble first
        for name, array in zip(node.input[1:4], (packed, scale, zero)):
            inits[name].CopyFrom(numpy_helper.from_array(array, name))
        done += 1
    onnx.save(model, str(graph_path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="model.onnx.data")
    return done
