"""Quantization-aware training: `prepare` swaps linears for fake-quantized ones (int4 per-group,
straight-through estimator), training runs as usual, `convert` stores the trained weights as real
int4 on the very grid the fake quantizer used (so outputs match up to float rounding).

Hand-written rather than torchao's QAT because torchao's int4 target layouts do not run on this CPU
(see `lmops.quant.int4`); the fake quantizer here shares its grid with our int4 storage.
"""
from __future__ import annotations

import torch
from torch import nn

from lmops.quant.api import set_module, target_linears
from lmops.quant.int4 import Int4Linear, fake_quantize, rtn
from lmops.quant.methods.int4 import check_divides


class FakeQuantLinear(nn.Linear):
    """nn.Linear whose forward uses int4-fake-quantized weights; gradients pass straight through
    the rounding. A subclass of nn.Linear, so peft can wrap it with LoRA."""

    group_size: int = 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w_q = w + (fake_quantize(w, self.group_size) - w).detach()  # STE: forward quantized, backward identity
        return nn.functional.linear(x, w_q.to(x.dtype), self.bias)


def prepare(model: nn.Module, group_size: int) -> nn.Module:
    linears = target_linears(model)
    check_divides(linears, group_size)
    for name, layer in linears.items():
        fq = FakeQuantLinear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        fq.group_size = group_size
        fq.load_state_dict(layer.state_dict())
        set_module(model, name, fq)
    return model


def _to_int4(fq: FakeQuantLinear, lora=None) -> Int4Linear:
    q, scale, zero = rtn(fq.weight.detach().float(), fq.group_size)
    return Int4Linear.from_codes(q, scale, zero, fq.group_size, fq.bias, lora)  # lora: B has the scaling folded in


def convert(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """Fake-quantized (optionally peft-LoRA-wrapped) model -> plain model with Int4Linear layers."""
    if hasattr(model, "peft_config"):
        from peft.tuners.lora import LoraLayer

        base = model.get_base_model()
        for name, module in list(base.named_modules()):
            if isinstance(module, LoraLayer) and isinstance(module.base_layer, FakeQuantLinear):
                key = module.active_adapters[0]
                a = module.lora_A[key].weight  # (r, in)
                b = module.lora_B[key].weight * module.scaling[key]  # (out, r)
                set_module(base, name, _to_int4(module.base_layer, (a, b)))
        model = base
    for name, module in list(model.named_modules()):
        if isinstance(module, FakeQuantLinear):
            set_module(model, name, _to_int4(module))
    return model.to(dtype).eval()


def distill(student: nn.Module, teacher: nn.Module, windows: list[torch.Tensor], steps: int, lr: float,
            batch_size: int, seed: int = 0, threads: int = 1, trainable: str = "linears",
            desc: str = "qat distill") -> list[float]:
    """Fine-tune `student` in place for `steps` AdamW steps to match the frozen `teacher`'s next-token
    distribution (KL(teacher || student), temperature 1) on `batch_size` token windows a step, drawn
    from `windows` ((1, T) tensors of equal T). Distillation, not the LM loss: on a few thousand tokens
    the LM loss overfits them, while the teacher's soft targets carry what the quantizer took away.
    `trainable`: "linears" (the target linears' weights only) or "all" parameters. Returns the losses."""
    import logging
    import random

    from tqdm.auto import tqdm

    from lmops.errors import QuantError
    from lmops.model.train import lr_at

    if not windows:
        raise QuantError("QAT distillation needs at least one calibration window")
    if trainable not in ("linears", "all"):
        raise QuantError(f"QAT trainable must be 'linears' or 'all', got {trainable!r}")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    linear_weights = {id(m.weight) for m in target_linears(student).values()}
    params = [p for p in student.parameters() if trainable == "all" or id(p) in linear_weights]
    for p in student.parameters():
        p.requires_grad_(any(p is q for q in params))
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    teacher.eval()
    student.train()
    data = torch.cat([w.reshape(1, -1) for w in windows if w.shape[-1] == windows[0].shape[-1]])
    losses = []
    bar = tqdm(range(steps), desc=desc, unit="step")
    for step in bar:
        batch = data[[rng.randrange(len(data)) for _ in range(batch_size)]]
        with torch.no_grad():
            target = torch.log_softmax(teacher(input_ids=batch).logits.float(), -1)
        logp = torch.log_softmax(student(input_ids=batch).logits.float(), -1)
        loss = torch.nn.functional.kl_div(logp, target, log_target=True, reduction="none").sum(-1).mean()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, min(5, steps // 4), lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(round(loss.item(), 5))
        bar.set_postfix(kl=f"{loss.item():.4f}")
        logging.getLogger(__name__).info("%s step %d/%d: KL %.4f", desc, step + 1, steps, loss.item())
    student.eval()
    return losses
