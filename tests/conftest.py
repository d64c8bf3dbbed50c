"""Shared fixtures: a tiny corpus and a tiny trained model, built once per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent

TINY = {
    "data": {"entities": 40, "recall_items": 60, "ood_sentences": 16},
    "train": {"base": "scratch", "arch": {"vocab_size": 300, "hidden_size": 32, "layers": 1, "heads": 2,
                                          "kv_heads": 2, "intermediate_size": 64},
              "context": 96, "steps": 30, "batch_size": 8, "lr": 0.003, "warmup": 2, "threads": 1},
    "evaluate": {"max_items": 8, "ppl_tokens": 512, "max_new_tokens": 6, "threads": 1},
    # Pipeline-level tests run every stage: a few schemes are enough there (test_quant_stage runs all).
    "quantize": {"schemes": ["bf16", "w8", "kv8"], "kv": {"group_size": 16, "residual": 8}, "kv_chunk": 8,
                 "methods": {"int4": {"group_size": 16}, "gptq": {"group_size": 16}, "qat": {"group_size": 16, "steps": 3,
                                                                                       "batch_size": 2},
                             "qat_lora": {"group_size": 16, "batch_size": 2, "lora": {"steps": 3}},
                             "qlora": {"batch_size": 2, "lora": {"steps": 3}}},
                 "calib_sequences": 2, "max_length": 64, "ppl_tokens": 256, "ood_tokens": 128, "qa_items": 4,
                 "max_new_tokens": 4, "context_tokens": 64, "decode_tokens": 4, "decode_repeats": 1},
    "prompts": {"threads": 1,
                "loop": {"rounds": 1, "minibatch": 4, "dev_size": 6, "test_size": 6, "model_proposals": 1, "mutations": 2},
                "router": {"train_size": 16, "dev_size": 8, "test_size": 8, "refiner_pairs": 20, "refiner_steps": 3}},
    "long_context": {"passkey_items": 1, "lengths": [1, 2], "depths": [0.5], "kb_entities": 6, "kb_questions": 3,
                     "kb_multiple": 2, "ppl_sequences": 1, "max_new_tokens": 6, "threads": 1,
                     "rope": {"types": ["linear", "yarn"]}, "finetune": {"steps": 2, "batch_size": 2},
                     "retrieval": {"chunk_tokens": 48, "overlap": 8, "top_k": 2}},
    "summary": {"quant_tolerance": 0.01},
}


@pytest.fixture(scope="session")
def tiny_params():
    from lmops.params import validate

    return validate(TINY)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory, tiny_params) -> Path:
    """A project directory with the tiny corpus and a tiny trained model in models/base."""
    from lmops.stages.data import run as stage_data
    from lmops.stages.train import run as stage_train

    root = tmp_path_factory.mktemp("tiny")
    stage_data(tiny_params, root)
    stage_train(tiny_params, root)
    return root


@pytest.fixture(scope="session")
def tiny_corpus(tiny_root):
    from lmops.data import Corpus

    return Corpus.load(tiny_root / "data" / "corpus")


@pytest.fixture(scope="session")
def tiny_model(tiny_root):
    """(model, tokenizer) of the tiny trained LLaMA; treat as read-only (deepcopy before changing)."""
    from lmops.model.build import load_model

    return load_model(tiny_root / "models" / "base")


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server for every test that needs one (it takes ~20 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):  # the shared CPU can be slow to start it
        yield


@pytest.fixture(scope="session")
def prefect_harness(prefect_server):
    """The same session server, under the name some tests use."""
    yield


@pytest.fixture(scope="session")
def s3():
    """A loopback S3 server (moto, tests/s3.py) for DVC remotes, LanceDB and Evidently on s3://."""
    from tests.s3 import loopback_s3

    with loopback_s3() as server:
        yield server


@pytest.fixture(scope="session")
def pushed_tiny(tmp_path_factory, s3):
    """(project, bare git remote): one tiny project (code included) that ran data + train, pushed to a
    bare git repository and to the loopback S3 remote. One `dvc repro` shared by the scale-out tests
    (tests/flows/test_remote_s3.py, tests/flows/test_fanout.py); its quantization grid is one scheme per worker."""
    from benchmarks.fanout import pushed_project

    params = {**TINY, "quantize": {**TINY["quantize"], "schemes": ["bf16", "w8"]}}
    return pushed_project(tmp_path_factory.mktemp("pushed"), s3, params)
