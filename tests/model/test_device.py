"""`device: auto` (issue 15 build 3), checked on a CPU: with CUDA faked present, training's helper
`resolve_device` picks "cuda" and serving, quantization builds and long context put their model
there (`Module.to("cuda")`, recorded and kept on the CPU here); without CUDA everything stays on CPU."""
from __future__ import annotations

import pytest

from lmops.params import validate
from tests.conftest import TINY


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch sees a GPU; `Module.to("cuda")` is recorded and leaves the module where it is."""
    import torch

    moved: list[str] = []
    real_to = torch.nn.Module.to

    def to(self, *args, **kwargs):
        target = args[0] if args else kwargs.get("device")
        if isinstance(target, (str, torch.device)) and str(target).startswith("cuda"):
            moved.append(str(target))
            return self
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.nn.Module, "to", to)
    return moved


def test_serving_loads_the_model_on_the_resolved_device(fake_cuda, tiny_root, tmp_path):
    from lmops.serve.app import Server
    from lmops.serve.engine import Job, generate
    from tests.serve.test_serve import QUESTION, serve_params

    server = Server(serve_params(tmp_path / "logs"), tiny_root)  # device: auto
    try:
        assert server.device == "cuda" and fake_cuda == ["cuda"]
        server.reload()  # same version: nothing to load
        result = generate(server.loaded, [Job(QUESTION, 3, 0.0)])[0]  # inputs follow model.device (CPU here)
        assert result.prompt_tokens > 0
    finally:
        server.close()
    cpu = Server(serve_params(tmp_path / "logs2"), tiny_root, device="cpu")
    cpu.close()
    assert cpu.device == "cpu" and fake_cuda == ["cuda"]


def test_quantize_builds_on_the_resolved_device(fake_cuda, tiny_root, tiny_params, tiny_corpus, monkeypatch):
    from lmops.model.build import resolve_device
    from lmops.quant import build as qbuild
    from lmops.quant.schemes import build_scheme
    from lmops.stages.quantize import run_grid

    qp = tiny_params.quantize
    ctx, _ = qbuild.build_context(qp, tiny_root / "models" / "base", tiny_corpus, 1, tiny_root,
                                  resolve_device("auto"))
    assert ctx.device == "cuda"
    model, _, _ = qbuild.build_variant(build_scheme("w8", qp), ctx)  # loaded through load_base(ctx)
    assert fake_cuda == ["cuda"] and model is not None

    seen = {}

    def stop(*args, **kwargs):
        seen["device"] = args[5] if len(args) > 5 else kwargs.get("device")
        raise RuntimeError("stop here")

    monkeypatch.setattr(qbuild, "build_context", stop)
    with pytest.raises(RuntimeError, match="stop here"):
        run_grid(tiny_params, tiny_root, progress=False)
    assert seen["device"] == "cuda"  # the stage resolves `device` and hands it to the builders


def test_long_context_runs_on_the_resolved_device(fake_cuda, tiny_root, monkeypatch):
    import lmops.longctx.experiment as experiment
    from lmops.stages.long_context import run

    seen = {}

    def stop(*args, **kwargs):
        seen["device"] = kwargs.get("device")
        raise RuntimeError("stop here")

    monkeypatch.setattr(experiment, "compare", stop)
    with pytest.raises(RuntimeError, match="stop here"):
        run(validate(TINY), tiny_root)
    assert seen["device"] == "cuda"


def test_without_cuda_everything_stays_on_the_cpu(monkeypatch, tiny_root, tmp_path):
    import torch

    from lmops.serve.app import Server
    from tests.serve.test_serve import serve_params

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    server = Server(serve_params(tmp_path / "logs"), tiny_root)
    try:
        assert server.device == "cpu" and server.loaded.model.device.type == "cpu"
    finally:
        server.close()
