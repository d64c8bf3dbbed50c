"""GPTQ int4 (Frantar et al., 2022): each column's rounding error is compensated on the columns still
to quantize, with the inverse Hessian of calibration inputs. Stored like int4 RTN (`Int4Linear`), on
the very grid RTN uses (`lmops.quant.int4.group_qparams`: asymmetric, fp16 zero point).

The standard fast formulation, so that a 135M model takes minutes on two CPU cores:
- sequential calibration, decoder layer by decoder layer: the inputs of layer i+1 are computed from
  the already-quantized layer i, and only one layer's inputs are held in memory;
- one Hessian per distinct input: linears that read the same tensor (q/k/v, gate/up) share it, and
  their weights are stacked along the output dimension and quantized in one GPTQ pass (rows are
  independent given the Hessian, so this is exact, and it saves Python-level column loops);
- the upper Cholesky factor of the damped inverse Hessian, lazy batch updates in blocks of
  `block_size` columns, act-order optional (with static groups, fixed from the original weights).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from lmops.quant.config import QuantError, check_group
from lmops.quant.method import scheme
from lmops.quant.methods.int4 import Int4Weight, check_divides
from lmops.quant.registry import register_method

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GPTQConfig:
    """int4 GPTQ, one (scale, zero) per `group_size` columns; `damp` is the Hessian's diagonal damping
    as a share of its mean diagonal; `block_size` columns per lazy batch update; `act_order` quantizes
    columns in order of decreasing Hessian diagonal (groups then fixed from the original weights:
    on SmolLM2-135M g64 it measured 22.79 held-out perplexity against 23.96 without)."""
    group_size: int = 64
    damp: float = 0.01
    block_size: int = 128
    act_order: bool = True
    embedding_bits: int = 8  # the embedding / LM head as well (lmops.quant.embedding; 0 keeps them float)
    # Zero points on whole codes (w4_gptq_iz): what int4 engines' fast kernels take (ONNX Runtime's
    # MatMulNBits runs float zero points on a slow path). GPTQ then compensates the shift too.
    integer_zero: bool = False

    def __post_init__(self):
        from lmops.quant.config import check_embedding_bits

        check_group(self.group_size)
        check_embedding_bits(self.embedding_bits)
        if not 0 < self.damp < 1:
            raise QuantError(f"damp must be in (0, 1), got {self.damp}")
        if self.block_size < 1:
            raise QuantError(f"block_size must be >= 1, got {self.block_size}")


def gptq_codes(w, hessian, group_size: int, damp: float = 0.01, block_size: int = 128, act_order: bool = False,
               integer_zero: bool = False):
    """(codes, scale, zero) of weight `w` (out, in) given the Hessian sum x x^T (in, in) of its inputs;
    codes (out, in) in 0..15, scale/zero (out, in/group_size), on the RTN grid (`group_qparams`), its zero
    points rounded to whole codes with `integer_zero`."""
    import torch

    from lmops.quant.int4 import dequantize_codes, group_qparams, quantize_codes

    rows, cols = w.shape
    if cols % group_size:
        raise QuantError(f"group_size {group_size} does not divide the weight's {cols} columns")
    W = w.detach().float().clone()
    H = hessian.detach().float().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    perm = None
    if act_order:  # static groups: every group's grid from the original weights, before any update
        static_scale, static_zero = group_qparams(W, group_size)
        static_zero = static_zero.round() if integer_zero else static_zero
        perm = torch.argsort(torch.diag(H), descending=True)
        col_scale = static_scale.repeat_interleave(group_size, 1)[:, perm]  # each permuted column's grid
        col_zero = static_zero.repeat_interleave(group_size, 1)[:, perm]
        W, H = W[:, perm], H[perm][:, perm]
    H += damp * torch.diag(H).mean() * torch.eye(cols)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    block = max(block_size, group_size) // group_size * group_size  # whole groups in a block
    Q = torch.zeros_like(W)
    scale = torch.zeros(rows, cols // group_size)
    zero = torch.zeros(rows, cols // group_size)
    for b1 in range(0, cols, block):
        b2 = min(b1 + block, cols)
        W1, Hinv1 = W[:, b1:b2].clone(), Hinv[b1:b2, b1:b2]
        Err1 = torch.zeros_like(W1)
        for i in range(b2 - b1):
            col = b1 + i
            if perm is not None:
                s, z = col_scale[:, col:col + 1], col_zero[:, col:col + 1]
            elif col % group_size == 0:  # the group's grid, from its already-updated weights
                g = col // group_size
                s, z = group_qparams(W1[:, i:i + group_size], group_size)
                z = z.round() if integer_zero else z
                scale[:, g:g + 1], zero[:, g:g + 1] = s, z
            x = W1[:, i:i + 1]
            q = quantize_codes(x, s, z)
            Q[:, col:col + 1] = q
            err = (x - dequantize_codes(q, s, z)) / Hinv1[i, i]  # (rows, 1)
            W1[:, i:] -= err * Hinv1[i:i + 1, i:]
            Err1[:, i:i + 1] = err
        W[:, b2:] -= Err1 @ Hinv[b1:b2, b2:]  # the lazy batch update of the columns still to come
    if perm is not None:
        Q = Q[:, torch.argsort(perm)]
        scale, zero = static_scale, static_zero
    return Q, scale, zero


def decoder_layers(model):
    """The model's stack of decoder layers: the longest nn.ModuleList holding linear layers."""
    from torch import nn

    best = None
    for _, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and any(isinstance(x, nn.Linear) for x in m.modules()):
            if best is None or len(m) > len(best):
                best = m
    if best is None:
        raise QuantError(f"{type(model).__name__} has no stack of decoder layers for sequential GPTQ")
    return best


class _Stop(Exception):
    pass


def _layer_inputs(model, layers, calib):
    """(hidden states, kwargs) that reach the first decoder layer, one per calibration sequence."""
    import torch

    captured = []

    def catch(module, args, kwargs):
        captured.append((args[0].detach(), {k: v for k, v in kwargs.items() if k != "hidden_states"}))
        raise _Stop

    if not calib:
        raise QuantError("calibration needs at least one token sequence")
    handle = layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        with torch.no_grad():
            for ids in calib:
                try:
                    model(input_ids=ids, use_cache=False)
                except _Stop:
                    pass
    finally:
        handle.remove()
    if len(captured) != len(calib):
        raise QuantError("sequential GPTQ: the first decoder layer did not see every calibration sequence")
    return captured


def _run_layer(layer, inputs):
    import torch

    outs = []
    with torch.no_grad():
        for x, kwargs in inputs:
            y = layer(x, **kwargs)
            outs.append(y[0] if isinstance(y, tuple) else y)
    return outs


def _layer_hessians(layer, names: dict, inputs) -> tuple[dict, dict]:
    """({key: [linears reading one input]}, {key: sum x x^T of that input}) over one pass of `layer`;
    a key is the first linear that read the input (q/k/v share one, gate/up share one)."""
    import torch

    group_of: dict[str, str] = {}  # linear -> the first linear that read the same input tensor
    hessians: dict[str, torch.Tensor] = {}  # one per distinct input, keyed by that first linear
    seen: dict[int, tuple] = {}  # id(input) -> (key, the input, held so its id is not reused)

    def reset(module, args, kwargs):
        seen.clear()

    def hook(name):
        def fn(module, args):
            x = args[0]
            key = seen.setdefault(id(x), (name, x))[0]
            group_of.setdefault(name, key)
            if key == name:
                flat = x.detach().float().reshape(-1, x.shape[-1])
                hessians[name] = hessians.get(name, 0) + flat.T @ flat
        return fn

    handles = [layer.register_forward_pre_hook(reset, with_kwargs=True)]
    handles += [m.register_forward_pre_hook(hook(n)) for n, m in names.items()]
    try:
        _run_layer(layer, inputs)
    finally:
        for h in handles:
            h.remove()
    groups: dict[str, list[str]] = {}
    for n, key in group_of.items():
        groups.setdefault(key, []).append(n)
    return groups, hessians


def sequential_gptq(model, calib, config: GPTQConfig, progress=None) -> dict:
    """{linear name: (codes, scale, zero)} for every target linear, layer by layer; the model's float
    weights are overwritten with their dequantized values as it goes (inputs of the next layer)."""
    import torch

    from lmops.quant.api import target_linears
    from lmops.quant.int4 import dequantize_codes

    targets = target_linears(model)
    check_divides(targets, config.group_size)
    layers = decoder_layers(model)
    inputs = _layer_inputs(model, layers, calib)
    codes: dict = {}
    start = time.perf_counter()
    for index, layer in enumerate(layers):
        names = {n: m for n, m in targets.items() if any(m is x for x in layer.modules())}
        groups, hessians = _layer_hessians(layer, names, inputs)
        for key, members in groups.items():
            stacked = torch.cat([names[n].weight.detach().float() for n in members], 0)
            q, s, z = gptq_codes(stacked, hessians[key], config.group_size, config.damp, config.block_size,
                                 config.act_order, config.integer_zero)
            row = 0
            for n in members:
                out = names[n].out_features
                codes[n] = (q[row:row + out], s[row:row + out], z[row:row + out])
                row += out
                names[n].weight.data.copy_(dequantize_codes(*codes[n]).to(names[n].weight.dtype))
        inputs = [(y, kw) for y, (_, kw) in zip(_run_layer(layer, inputs), inputs)]  # from the quantized layer
        msg = (f"gptq layer {index + 1}/{len(layers)}: {len(names)} linears, {len(groups)} Hessians, "
               f"{time.perf_counter() - start:.1f}s")
        log.info(msg)
        if progress:
            progress(msg)
    missing = [n for n in targets if n not in codes]
    if missing:  # linears outside the decoder stack: one-shot on the (already quantized) model's inputs
        from lmops.quant.api import collect_stats

        hess = collect_stats(model, calib, missing, hessian=True)
        for n in missing:
            codes[n] = gptq_codes(targets[n].weight, hess[n], config.group_size, config.damp, config.block_size,
                                  config.act_order, config.integer_zero)
    return codes


class GPTQ(Int4Weight):
    name = "gptq"
    schemes = {"w4_gptq": scheme(), "w4_gptq_kv8": scheme(kv=8), "w4_gptq_iz": scheme(integer_zero=True)}

    def apply(self, model, config: GPTQConfig, calib):
        codes = sequential_gptq(model, calib, config)
        return self.quantize_linears(model, config.group_size, lambda name, w: codes[name], config.embedding_bits)


register_method(GPTQConfig, GPTQ())
