"""Retraining re-runs quantization: the challenger's served variant is built with lmops.quant, evaluated,
registered with its lineage (variant, full-precision parent), promoted, and hot-reloaded by the server."""
from __future__ import annotations

import shutil
import time

import httpx
import pytest

from lmops.io import read_json
from lmops.registry import Registry
from lmops.retrain.run import CHALLENGER, evaluate, full_precision, quantize_hook, register_and_gate
from lmops.serve import running_server
from tests.registry.test_registry import NAME, git_repo

QUESTION = "\nQuestion: Who makes Kavin-123?\nAnswer:"
KEYS = {"new_qa", "new_answer_logprob", "new_qa_trained", "new_qa_untrained", "new_qa_heldout", "heldout_items",
        "old_test_qa"}


@pytest.fixture
def project(tiny_root, tiny_model, tmp_path):
    """A git project with the tiny corpus, the tiny model as registered champion, and a challenger
    (the tiny model with other weights, as a fine-tune would leave it)."""
    from tests.serve.test_serve import perturbed_copy

    root = git_repo(tmp_path / "proj")
    shutil.copytree(tiny_root / "data" / "corpus", root / "data" / "corpus")
    shutil.copytree(tiny_root / "models" / "base", root / "models" / "base")
    perturbed_copy(tiny_model, root / CHALLENGER)
    reg = Registry(root)
    v1 = reg.register(NAME, root / "models" / "base")
    reg.promote(NAME, v1.version)
    return root, v1.version


def test_quantize_hook_builds_the_scheme_named_in_params(project, tiny_params):
    root, _ = project
    assert tiny_params.drift.retrain.quantize == "w8"  # the default
    served = quantize_hook(tiny_params, root, CHALLENGER)
    assert served == root / "models" / "challenger-w8"
    meta = read_json(served / "quant.json")
    assert meta["scheme"] == "w8" and meta["weights"] == "Int8WeightConfig"
    full_bytes = (root / CHALLENGER / "model.safetensors").stat().st_size
    assert (served / "weights.pt").stat().st_size < 0.8 * full_bytes  # really low-bit, not a copy
    metrics = evaluate(tiny_params, root, served, set())  # loads through load_variant
    assert set(metrics) == KEYS
    none = tiny_params.model_copy(update={"drift": tiny_params.drift.model_copy(update={
        "retrain": tiny_params.drift.retrain.model_copy(update={"quantize": "none"})})})
    assert quantize_hook(none, root, CHALLENGER) == CHALLENGER


def test_served_variant_is_registered_promoted_and_hot_reloaded(project, tiny_params, tmp_path):
    root, v1 = project
    served = quantize_hook(tiny_params, root, CHALLENGER)
    sp = tiny_params.serve.model_copy(update={"port": 0, "reload_seconds": 0.2, "log_dir": str(tmp_path / "logs"),
                                              "prompt_hook": ""})
    champ = {"new_qa": 0.1, "new_answer_logprob": -2.0, "new_qa_trained": 0.0, "new_qa_untrained": 0.0,
             "new_qa_heldout": 0.0, "new_qa_heldout_rag": 0.1, "old_test_qa": 0.5}
    full = {**champ, "new_qa_heldout_rag": 0.6}
    quant = {**champ, "new_qa_heldout_rag": 0.5}  # the gate reads this one
    with running_server(sp, root) as (url, srv):
        assert httpx.get(f"{url}/health").json()["version"] == v1
        record = register_and_gate(tiny_params, root, v1, root / CHALLENGER, served, root / "data" / "corpus",
                                   champ, full, quant, {"start": "a", "end": "b"})
        assert record["promoted"] and record["variant"] == "w8" and "0.100 -> 0.500" in record["reason"]
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/health").json()["version"] != record["version"] and time.monotonic() < deadline:
            time.sleep(0.1)
        health = httpx.get(f"{url}/health").json()
        r = httpx.post(f"{url}/v1/completions", json={"prompt": QUESTION, "max_tokens": 3}, timeout=30)
    assert health["version"] == record["version"], "the server did not hot-reload the quantized champion"
    assert r.status_code == 200 and r.json()["system_fingerprint"] == record["version"]
    assert type(srv.loaded.model.model.layers[0].mlp.up_proj).__name__ == "Int8Linear"  # the int8 weights served
    reg = Registry(root)
    q, f = reg.get(NAME, record["version"]), reg.get(NAME, record["full_version"])
    assert (q.lineage.variant, q.lineage.parent, q.lineage.metrics) == ("w8", f.version, quant)
    assert (f.lineage.variant, f.lineage.parent, f.lineage.metrics) == ("full", v1, full)
    assert (q.path / "quant.json").is_file() and reg.resolve(NAME, "champion").version == q.version
    # The next retraining fine-tunes the full-precision parent, never the rounded weights.
    assert full_precision(tiny_params, root, q.path, q.version) == (f.path, f.version)
    assert full_precision(tiny_params, root, f.path, f.version) == (f.path, f.version)


@pytest.mark.parametrize("value, message", [("kv8", "quantizes the KV cache"), ("w3", "unknown quantization scheme")])
def test_retrain_quantize_param_is_validated(value, message):
    from lmops.params import ParamsError, validate

    with pytest.raises(ParamsError, match=rf"drift\.retrain: .*{message}"):
        validate({"drift": {"retrain": {"quantize": value}}})
