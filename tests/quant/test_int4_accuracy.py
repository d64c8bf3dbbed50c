"""Accuracy-preserving int4 on tiny tensors and the tiny model: fast sequential GPTQ, QAT conversion."""
import copy

import pytest
import torch

from lmops.quant.config import QuantError


def _correlated(seed: int = 0, rows: int = 96, cols: int = 256, tokens: int = 2048):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    x = torch.randn(tokens, 16, generator=g) @ torch.randn(16, cols, generator=g)
    x = x + 0.1 * torch.randn(tokens, cols, generator=g)
    return w, x


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("group_size", [32, 64])
def test_gptq_codes_beat_rtn_on_correlated_inputs(act_order, group_size):
    from lmops.quant.int4 import Int4Linear, rtn
    from lmops.quant.methods.gptq import gptq_codes

    w, x = _correlated()
    errs = {}
    for name, (q, s, z) in {"rtn": rtn(w, group_size),
                            "gptq": gptq_codes(w, x.T @ x, group_size, block_size=64, act_order=act_order)}.items():
        assert q.shape == w.shape and s.shape == z.shape == (w.shape[0], w.shape[1] // group_size)
        assert q.min() >= 0 and q.max() <= 15 and z.min() >= 0 and z.max() <= 15 and (s > 0).all()
        assert torch.equal(z, z.half().float())  # the RTN grid: a fractional zero point, stored exactly in fp16
        layer = Int4Linear.from_codes(q, s, z, group_size)
        errs[name] = float(((w - layer.dequantize()) @ x.T).norm())  # output error on the calibration inputs
    assert errs["gptq"] < 0.7 * errs["rtn"], errs


def test_gptq_block_size_does_not_change_the_result():
    from lmops.quant.methods.gptq import gptq_codes

    w, x = _correlated(1, rows=8, cols=128, tokens=512)
    a = gptq_codes(w, x.T @ x, 32, block_size=32)
    b = gptq_codes(w, x.T @ x, 32, block_size=128)  # lazy batch updates are exact, only faster
    assert (a[0] != b[0]).float().mean() < 0.01 and torch.allclose(a[1], b[1])


def test_sequential_gptq_on_the_tiny_model(tiny_model):
    from lmops.quant.api import quantize_, target_linears
    from lmops.quant.int4 import Int4Linear
    from lmops.quant.methods.gptq import GPTQConfig, decoder_layers, sequential_gptq
    from lmops.quant.methods.int4 import Int4WeightConfig

    model = copy.deepcopy(tiny_model[0]).float().eval()
    gen = torch.Generator().manual_seed(0)
    calib = [torch.randint(0, 300, (1, 48), generator=gen) for _ in range(4)]
    ids = torch.cat(calib)  # judged on the calibration tokens: what GPTQ minimizes

    def loss(m):
        with torch.no_grad():
            return float(m.float()(input_ids=ids, labels=ids).loss)

    logs = []
    codes = sequential_gptq(copy.deepcopy(model), calib, GPTQConfig(group_size=16), progress=logs.append)
    assert set(codes) == set(target_linears(model))
    assert len(logs) == len(decoder_layers(model)) and "4 Hessians" in logs[0]  # q/k/v and gate/up share one
    gptq = quantize_(copy.deepcopy(model), GPTQConfig(group_size=16, embedding_bits=0), calib)
    assert sum(isinstance(m, Int4Linear) for m in gptq.modules()) == len(codes)
    rtn = quantize_(copy.deepcopy(model), Int4WeightConfig(group_size=16, embedding_bits=0))
    base, l_rtn, l_gptq = loss(model), loss(rtn), loss(gptq)
    assert abs(l_gptq - base) < abs(l_rtn - base), (base, l_rtn, l_gptq)


def test_bad_group_size_and_calibration_errors(tiny_model):
    from lmops.quant.api import quantize_
    from lmops.quant.methods.gptq import GPTQConfig, gptq_codes

    with pytest.raises(QuantError, match="group_size must be a power of two"):
        GPTQConfig(group_size=24)
    with pytest.raises(QuantError, match="block_size"):
        GPTQConfig(block_size=0)
    with pytest.raises(QuantError, match="group_size 64 does not divide the weight's 96 columns"):
        gptq_codes(torch.randn(4, 96), torch.eye(96), 64)
    model = copy.deepcopy(tiny_model[0])  # hidden 32: a 64-column group cannot divide it
    with pytest.raises(QuantError, match=r"group_size 64 does not divide .*in_features=32"):
        quantize_(model, GPTQConfig(group_size=64), [torch.zeros(1, 8, dtype=torch.long)])
    with pytest.raises(QuantError, match="at least one token sequence"):
        quantize_(copy.deepcopy(tiny_model[0]), GPTQConfig(group_size=16), [])


def test_qat_conversion_produces_valid_codes(tiny_model):
    from lmops.quant import qat
    from lmops.quant.int4 import Int4Linear, unpack_nibbles

    model = qat.prepare(copy.deepcopy(tiny_model[0]).float(), group_size=16)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # as if trained: weights off the starting grid
    converted = qat.convert(model, dtype=torch.float32)
    layers = [m for m in converted.modules() if isinstance(m, Int4Linear)]
    assert layers
    for m in layers:
        codes = unpack_nibbles(m.qweight)
        assert codes.shape == (m.out_features, m.in_features) and int(codes.max()) <= 15
        assert m.zero.dtype == torch.float16 and int(m.zero.max()) <= 15 and (m.scale.float() > 0).all()
        assert torch.isfinite(m.dequantize()).all()


def test_qat_distillation_learns_and_its_float_control_stays_put(tiny_model):
    from lmops.quant import qat

    teacher = copy.deepcopy(tiny_model[0]).float().eval()
    windows = [torch.randint(0, 300, (1, 32), generator=torch.Generator().manual_seed(i)) for i in range(4)]
    batch = torch.cat(windows)

    def kl(model):
        with torch.no_grad():
            logp, target = (torch.log_softmax(m(input_ids=batch).logits, -1) for m in (model, teacher))
            return float(torch.nn.functional.kl_div(logp, target, log_target=True, reduction="none").sum(-1).mean())

    student = qat.prepare(copy.deepcopy(teacher), group_size=32)
    before = kl(student)
    losses = qat.distill(student, teacher, windows, steps=12, lr=1e-4, batch_size=4)
    assert len(losses) == 12 and kl(student) < 0.7 * before, (before, kl(student))
    frozen = dict(student.named_parameters())
    assert not frozen["model.embed_tokens.weight"].requires_grad  # trainable="linears"
    assert torch.equal(frozen["model.embed_tokens.weight"], teacher.model.embed_tokens.weight)
    control = copy.deepcopy(teacher)  # the control's float student starts at the teacher: nothing to learn
    assert qat.distill(control, teacher, windows, steps=2, lr=1e-4, batch_size=2)[0] < 1e-6
    with pytest.raises(QuantError, match="trainable must be"):
        qat.distill(control, teacher, windows, steps=1, lr=1e-3, batch_size=1, trainable="some")


def test_qat_config_rejects_bad_settings():
    from lmops.quant.methods.qat import QATConfig

    with pytest.raises(QuantError, match="objective must be"):
        QATConfig(objective="mse")
    with pytest.raises(QuantError, match="data must be"):
        QATConfig(data="test")
    with pytest.raises(QuantError, match="group_size must be a power of two"):
        QATConfig(group_size=48)
