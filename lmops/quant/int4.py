"""Int4 weight-only quantization: per-group asymmetric round-to-nearest, GPTQ, and the packed layer.

The grid is lmops' own (torchao's GPTQ asserts CUDA; bitsandbytes has NF4 only, fixed blocks): one grid
(`group_qparams`) serves RTN, GPTQ (lmops.quant.methods.gptq) and QAT, so a QAT-trained or GPTQ-compensated weight is stored
exactly on the grid it was optimized for. It is saved as packed nibbles + bf16 scales + fp16 zeros.
The zero point is a float (in code units, like GGUF's Q4_1 minimum), not an integer: an integer zero
moves each group's grid off its min/max by up to half a step, which on SmolLM2-135M cost +26% held-out
perplexity at group 32 against +0% with a float zero (its weights came from Q4_1 blocks of 32).

The matmul runs on ATen's int4 kernels, the ones torchao's CPU layout (`Int4WeightOnlyConfig(
int4_packing_format="opaque")`) and CUDA tinygemm layout call: `_weight_int4pack_mm_for_cpu` (AVX512,
with an AVX2/scalar path) and `_weight_int4pack_mm` (CUDA). The codes are converted into their packed
layout once per device (`to_fast_layout`), never dequantized per call.

The conversion (documented here, tested in tests/quant/test_quant_kernels.py). lmops stores
    w = (q - z) * s                       q in 0..15, zero z in [0, 15] (fp16), s bf16
the kernels compute
    w = (q - 8) * S + Z                   "float zero" convention (torchao ZeroPointDomain.FLOAT)
so S = s and Z = (8 - z) * s, with the same codes q. (A call with more than `KERNEL_MAX_ROWS` rows, a
prefill, dequantizes once into one dense GEMM instead: these kernels are GEMVs, slow on many rows.) In float32, Z is exact ((8 - z) has <= 15 bits, s 8).
The kernels take S, Z in the activation dtype: in bf16 Z is rounded for the few groups where (8 - z) * s
needs more than 8 significant bits (about 1% of groups on random weights), so the remainder
dZ = Z - bf16(Z) is kept in float32 and added as (per-group sums of x) @ dZ, a (M, groups) x (groups, N)
product: the layer then computes exactly sum_k x_k (q - z) s, up to float accumulation order.
"""
from __future__ import annotations

import torch
from torch import nn

QMAX = 15  # 4-bit codes 0..15
ZERO_DTYPE = torch.float16  # stored zero point (code units, fractional), as Q4_1 stores its minimum
SCALE_DTYPE = torch.bfloat16  # stored scale precision; quantization uses the rounded value


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """(out, in) codes in 0..15 -> (out, in/2) uint8, even column in the low nibble."""
    q = q.to(torch.uint8)
    return q[:, 0::2] | (q[:, 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """(out, in/2) uint8 -> (out, in) uint8 codes."""
    return torch.stack([packed & 0xF, packed >> 4], dim=-1).reshape(packed.shape[0], -1)


def group_qparams(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group (scale, zero) of `w` (out, in) from its min/max, both widened to include 0. Returns
    float32 tensors of shape (out, in/group_size), rounded as stored: scale bf16, zero (a fractional
    code, so the grid's ends are the group's min and max) fp16."""
    wg = w.float().reshape(w.shape[0], -1, group_size)
    lo, hi = wg.amin(-1).clamp(max=0), wg.amax(-1).clamp(min=0)
    scale = ((hi - lo) / QMAX).clamp(min=1e-8).to(SCALE_DTYPE).float()
    zero = (-lo / scale).clamp(0, QMAX).to(ZERO_DTYPE).float()
    return scale, zero


def quantize_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Codes of `w` (out, k) on a grid whose scale/zero are (out, k/g) (or (out, 1) for one column)."""
    g = w.shape[1] // scale.shape[1]
    s, z = scale.repeat_interleave(g, 1), zero.repeat_interleave(g, 1)
    return torch.clamp(torch.round(w.float() / s + z), 0, QMAX)


def dequantize_codes(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    g = q.shape[1] // scale.shape[1]
    return (q.float() - zero.repeat_interleave(g, 1)) * scale.repeat_interleave(g, 1)


def fake_quantize(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """What int4 RTN storage would give back, in w's dtype (the QAT forward)."""
    scale, zero = group_qparams(w.detach(), group_size)
    return dequantize_codes(quantize_codes(w, scale, zero), scale, zero).to(w.dtype)


def rtn(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    scale, zero = group_qparams(w, group_size)
    return quantize_codes(w, scale, zero), scale, zero


def float_zero_params(scale: torch.Tensor, zero: torch.Tensor, dtype: torch.dtype
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """lmops' (scale, zero), each (N, groups), as the int4 kernels' `scales_and_zeros`
    (groups, N, 2) in `dtype` (S = s, Z = (8 - z) * s), and the float32 remainder dZ (groups, N) that
    `dtype` could not hold (None when Z is exact in it). See the module doc."""
    s = scale.float()
    zf = (8 - zero.float()) * s  # exact in float32
    packed = torch.stack([s.T, zf.T], -1).to(dtype).contiguous()
    rest = (zf.T - packed[..., 1].float()).contiguous()
    return packed, (rest if rest.any() else None)


def pack_int4_for(codes: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(N, K) codes in 0..15 -> the int4 kernel's packed weight on `device` (CPU or CUDA tinygemm)."""
    if device.type == "cpu":
        return torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32).contiguous(), 1)
    q = codes.to(device=device, dtype=torch.int32)
    return torch.ops.aten._convert_weight_to_int4pack((q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8), 8)


def int4_mm(x2: torch.Tensor, packed: torch.Tensor, group_size: int, scales_and_zeros: torch.Tensor,
            rest: torch.Tensor | None) -> torch.Tensor:
    """x2 (M, K) @ the packed int4 weight^T, with the float32 zero remainder `rest` added (module doc)."""
    mm = torch.ops.aten._weight_int4pack_mm_for_cpu if x2.device.type == "cpu" else torch.ops.aten._weight_int4pack_mm
    y = mm(x2, packed, group_size, scales_and_zeros)
    if rest is None:
        return y
    sums = x2.float().reshape(x2.shape[0], -1, group_size).sum(-1)  # (M, groups)
    return (y.float() + sums @ rest).to(y.dtype)


def fast_int4_ok() -> bool:
    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and hasattr(
        torch.ops.aten, "_convert_weight_to_int4pack_for_cpu")


def register_int4_buffers(module: nn.Module, rows: int, cols: int, group_size: int) -> None:
    """The stored form of a (rows, cols) int4 matrix: packed codes, bf16 scales, fp16 zeros per group."""
    module.register_buffer("qweight", torch.zeros(rows, cols // 2, dtype=torch.uint8))
    module.register_buffer("scale", torch.zeros(rows, cols // group_size, dtype=SCALE_DTYPE))
    module.register_buffer("zero", torch.zeros(rows, cols // group_size, dtype=ZERO_DTYPE))


def keep_zero_dtype(module: nn.Module, apply):
    """Run `apply` (nn.Module._apply: .to(), .float(), .cuda()) but keep the zero point's stored dtype:
    a model-wide .to(bfloat16) would round the fp16 fractional zeros (bf16 keeps 8 bits). Only its device
    follows; a tensor shared by a tied embedding and LM head stays one tensor."""
    zero = module.zero
    out = apply()
    module.zero = zero.to(module.qweight.device)
    return out


class Int4Linear(nn.Module):
    """A linear layer whose weight lives as packed 4-bit codes + bf16 scales + fp16 zero points. With
    bf16/fp16 inputs it runs on ATen's int4 kernel (the codes converted once per device into its layout,
    see the module doc); float32 inputs, gradients, or a machine without the kernel take the dequantized
    path. An optional LoRA adapter (kept, not merged) adds `x @ A^T @ B^T` (B carries the LoRA scaling)."""

    def __init__(self, in_features: int, out_features: int, group_size: int, bias: bool = False,
                 lora_rank: int = 0):
        super().__init__()
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        register_int4_buffers(self, out_features, in_features, group_size)
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        if lora_rank:
            self.register_buffer("lora_A", torch.zeros(lora_rank, in_features, dtype=SCALE_DTYPE))
            self.register_buffer("lora_B", torch.zeros(out_features, lora_rank, dtype=SCALE_DTYPE))
        else:
            self.lora_A = self.lora_B = None
        self._fast: dict = {}  # derived, never saved: the kernel layout per (device, dtype)
        self._no_fast = False  # the kernel failed here once: dequantize instead

    def _apply(self, fn, recurse=True):  # .to()/.cuda(): the kernel layout is rebuilt for the new place
        self._fast = {}
        return keep_zero_dtype(self, lambda: super(Int4Linear, self)._apply(fn, recurse))

    def to_fast_layout(self, device: torch.device, dtype: torch.dtype):
        """(packed codes, scales_and_zeros, float32 zero remainder) for the int4 kernel, built once."""
        key = (device, dtype)
        if key not in self._fast:
            sz, rest = float_zero_params(self.scale, self.zero, dtype)
            self._fast[key] = (pack_int4_for(unpack_nibbles(self.qweight), device), sz.to(device),
                               None if rest is None else rest.to(device))
        return self._fast[key]

    @classmethod
    def from_codes(cls, q, scale, zero, group_size: int, bias=None, lora=None) -> "Int4Linear":
        """From codes/scale/zero (out, in), (out, groups) x2; `lora` = (A (r, in), B (out, r))."""
        layer = cls(q.shape[1], q.shape[0], group_size, bias=bias is not None,
                    lora_rank=0 if lora is None else lora[0].shape[0])
        if lora is not None:
            layer.lora_A.copy_(lora[0].detach())
            layer.lora_B.copy_(lora[1].detach())
        layer.qweight.copy_(pack_nibbles(q))
        layer.scale.copy_(scale.to(SCALE_DTYPE))
        layer.zero.copy_(zero.to(ZERO_DTYPE))
        if bias is not None:
            layer.bias.data.copy_(bias.detach().float())
        return layer

    def dequantize(self) -> torch.Tensor:
        return dequantize_codes(unpack_nibbles(self.qweight), self.scale.float(), self.zero.float())

    def dequantize_as(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight in `dtype` (one rounding of (q - z) * s), computed in `dtype` (fast, for prefills)."""
        n, groups = self.scale.shape
        q = unpack_nibbles(self.qweight).view(n, groups, self.group_size).float()
        return ((q - self.zero.float()[..., None]) * self.scale.float()[..., None]).view(n, -1).to(dtype)

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        from lmops.quant.int8 import KERNEL_MAX_ROWS

        rows = x.numel() // self.in_features
        if rows > KERNEL_MAX_ROWS and x.dtype in (torch.bfloat16, torch.float16):  # a prefill: one dense GEMM
            return nn.functional.linear(x, self.dequantize_as(x.dtype))
        if (not self._no_fast and x.dtype in (torch.bfloat16, torch.float16) and not x.requires_grad
                and fast_int4_ok()):
            try:
                packed, sz, rest = self.to_fast_layout(x.device, x.dtype)
                y = int4_mm(x.reshape(-1, self.in_features).contiguous(), packed, self.group_size, sz, rest)
                return y.reshape(*x.shape[:-1], self.out_features)
            except (RuntimeError, NotImplementedError):
                self._no_fast, self._fast = True, {}
        return nn.functional.linear(x, self.dequantize().to(x.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._matmul(x)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        if self.lora_A is not None:
            y = y + (x @ self.lora_A.to(x.dtype).T) @ self.lora_B.to(x.dtype).T
        return y

    def extra_repr(self) -> str:
        lora = f", lora_rank={self.lora_A.shape[0]}" if self.lora_A is not None else ""
        return f"in={self.in_features}, out={self.out_features}, group_size={self.group_size}{lora}"


class Int4Embedding(nn.Module):
    """An embedding table stored like `Int4Linear` (packed codes, per-group bf16 scale and fp16 zero,
    groups along the embedding dimension); the looked-up rows are dequantized. With a tied LM head, its
    buffers are the very tensors of that head's `Int4Linear`."""

    def __init__(self, num_embeddings: int, embedding_dim: int, group_size: int):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.group_size = num_embeddings, embedding_dim, group_size
        register_int4_buffers(self, num_embeddings, embedding_dim, group_size)

    def _apply(self, fn, recurse=True):
        return keep_zero_dtype(self, lambda: super(Int4Embedding, self)._apply(fn, recurse))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        rows = dequantize_codes(unpack_nibbles(self.qweight[flat]), self.scale[flat].float(), self.zero[flat].float())
        return rows.reshape(*ids.shape, self.embedding_dim).to(self.scale.dtype)  # the model's float dtype

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int4, group_size={self.group_size}"
