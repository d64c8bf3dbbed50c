"""Int4 weight-only quantization: per-group asymmetric round-to-nearest, GPTQ, and the packed layer.

Written here rather than taken from torchao because torchao 0.18's int4 layouts do not run on this
CPU (plain/preshuffled need the `mslk` CUDA kernels, plain_int32 is XPU-only, tile_packed_to_4d is
tinygemm/bf16-CUDA) and its GPTQ asserts CUDA. bitsandbytes has NF4 only (no GPTQ, fixed blocks).
One grid (`group_qparams`) serves RTN, GPTQ and QAT, so a QAT-trained or GPTQ-compensated weight is
stored exactly on the grid it was optimized for.
"""
from __future__ import annotations

import torch
from torch import nn

QMAX = 15  # 4-bit codes 0..15
SCALE_DTYPE = torch.bfloat16  # stored scale precision; quantization uses the rounded value


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """(out, in) codes in 0..15 -> (out, in/2) uint8, even column in the low nibble."""
    q = q.to(torch.uint8)
    return q[:, 0::2] | (q[:, 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """(out, in/2) uint8 -> (out, in) uint8 codes."""
    return torch.stack([packed & 0xF, packed >> 4], dim=-1).reshape(packed.shape[0], -1)


def group_qparams(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group (scale, zero) of `w` (out, in) from its min/max, both widened to include 0 so that 0
    is exact. Returns float32 tensors of shape (out, in/group_size); scale already bf16-rounded."""
    wg = w.float().reshape(w.shape[0], -1, group_size)
    lo, hi = wg.amin(-1).clamp(max=0), wg.amax(-1).clamp(min=0)
    scale = ((hi - lo) / QMAX).clamp(min=1e-8).to(SCALE_DTYPE).float()
    zero = torch.round(-lo / scale).clamp(0, QMAX)
    return scale, zero


def quantize_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Codes of `w` (out, k) on a grid whose scale/zero are (out, k/g) (or (out, 1) for one column)."""
    g = w.shape[1] // scale.shape[1]
    s, z = scale.repeat_interleave(g, 1), zero.repeat_interleave(g, 1)
    return torch.clamp(torch.round(w.float() / s) + z, 0, QMAX)


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


def gptq(w: torch.Tensor, hessian: torch.Tensor, group_size: int, damp: float = 0.01
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ (no act-order): quantize columns left to right; each column's rounding error, scaled by
    the inverse-Hessian Cholesky factor, is subtracted from the columns still to come. A group's
    (scale, zero) is fixed from the already-updated weights when the group starts."""
    W = w.detach().float().clone()  # (out, in)
    H = hessian.detach().float().clone()  # (in, in), sum of x x^T over calibration tokens
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * torch.diag(H).mean() * torch.eye(H.shape[0])
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    cols = W.shape[1]
    Q = torch.zeros_like(W)
    scales, zeros = [], []
    for i in range(cols):
        if i % group_size == 0:
            s, z = group_qparams(W[:, i:i + group_size], group_size)
            scales.append(s)
            zeros.append(z)
        q = quantize_codes(W[:, i:i + 1], s, z)
        Q[:, i:i + 1] = q
        err = (W[:, i] - dequantize_codes(q, s, z)[:, 0]) / Hinv[i, i]  # (out,)
        W[:, i:] -= err[:, None] * Hinv[i, i:][None, :]
    return Q, torch.cat(scales, 1), torch.cat(zeros, 1)


class Int4Linear(nn.Module):
    """A linear layer whose weight lives as packed 4-bit codes + bf16 scales + uint8 zero points,
    dequantized on the fly to the input's dtype. An optional LoRA adapter (kept, not merged) adds
    `x @ A^T @ B^T` (B carries the LoRA scaling)."""

    def __init__(self, in_features: int, out_features: int, group_size: int, bias: bool = False,
                 lora_rank: int = 0):
        super().__init__()
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        groups = in_features // group_size
        self.register_buffer("qweight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8))
        self.register_buffer("scale", torch.zeros(out_features, groups, dtype=SCALE_DTYPE))
        self.register_buffer("zero", torch.zeros(out_features, groups, dtype=torch.uint8))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        if lora_rank:
            self.register_buffer("lora_A", torch.zeros(lora_rank, in_features, dtype=SCALE_DTYPE))
            self.register_buffer("lora_B", torch.zeros(out_features, lora_rank, dtype=SCALE_DTYPE))
        else:
            self.lora_A = self.lora_B = None

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
        layer.zero.copy_(zero.to(torch.uint8))
        if bias is not None:
            layer.bias.data.copy_(bias.detach().float())
        return layer

    def dequantize(self) -> torch.Tensor:
        return dequantize_codes(unpack_nibbles(self.qweight), self.scale.float(), self.zero.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.dequantize().to(x.dtype)
        y = nn.functional.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))
        if self.lora_A is not None:
            y = y + (x @ self.lora_A.to(x.dtype).T) @ self.lora_B.to(x.dtype).T
        return y

    def extra_repr(self) -> str:
        lora = f", lora_rank={self.lora_A.shape[0]}" if self.lora_A is not None else ""
        return f"in={self.in_features}, out={self.out_features}, group_size={self.group_size}{lora}"
