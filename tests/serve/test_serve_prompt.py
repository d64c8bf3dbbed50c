"""The built-in production prompt hook: the prompt registry's `kb_qa@production`, rendered around each
request, re-read after a promotion, and never a failed request when the registry is missing."""
from __future__ import annotations

import logging
import os
import shutil

import httpx
import pytest

from lmops.data.generate import qa_text
from lmops.params import ServeParams
from lmops.prompts.optimize import SERVED_PROMPT, ensure_served_prompt
from lmops.prompts.registry import PromptRegistry
from lmops.prompts.templates import load_library
from lmops.serve.prompt import RegistryPrompt, kb_qa_vars, registry_hook
from tests.conftest import ROOT

QUESTION = "\nQuestion: Who makes Kavin-123?\nAnswer:"


def seeded_registry(path):
    """A registry with the served prompt as the prompts stage seeds it (kb_qa@1 = the training format)."""
    reg = PromptRegistry.open(path)
    assert ensure_served_prompt(reg, load_library(ROOT / "prompts")) == 1
    reg.save()
    return reg


def touch_later(path):
    """Make sure a rewrite is seen as a change even on a coarse-mtime filesystem."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_production_template_renders_the_trained_format_unchanged(tmp_path, tiny_params, tiny_corpus):
    """Every simulated request (open/closed book, incidents, chat, drift) reaches the model as sent."""
    from lmops.serve.protocol import Message, chat_prompt
    from lmops.serve.simulate import Traffic

    seeded_registry(tmp_path / "registry.json")
    hook = RegistryPrompt(tmp_path / "registry.json", "kb_qa@production")
    from lmops.params import SimulateParams

    sim = SimulateParams(fresh_entities=4, topic={"share": 0.3}, style={"share": 0.2}, ood={"share": 0.1})
    traffic = Traffic(sim, tiny_corpus)
    for i in range(60):
        body = traffic.request(i).body
        text = body.get("prompt") or chat_prompt([Message(**m) for m in body["messages"]])
        assert hook(text) == (text, "kb_qa@1"), text


def test_a_promotion_is_picked_up_without_restart(tmp_path):
    path = tmp_path / "registry.json"
    reg = seeded_registry(path)
    hook = RegistryPrompt(path, "kb_qa@production")
    assert hook("Doc.\nQuestion: Who?\nAnswer:") == ("Doc.\nQuestion: Who?\nAnswer:", "kb_qa@1")
    name, spec = SERVED_PROMPT
    v2 = reg.register(name, {**spec, "instruction": "Answer from the document.", "question_first": True},
                      reg.get("kb_qa@1")["template"], {"dev": 0.5}, "loop")
    reg.set_alias(name, "production", v2)
    reg.save()
    touch_later(path)
    assert hook("Doc.\nQuestion: Who?\nAnswer:") == ("Answer from the document.\nQuestion: Who?\nDoc.\nAnswer:", "kb_qa@2")
    # a plain completion prompt is continued as sent, not rewritten into a question (issue 15 b)
    assert hook("The capital of France is") == ("The capital of France is", "none")


def test_missing_or_broken_registry_never_fails_a_request(tmp_path, caplog):
    path = tmp_path / "registry.json"
    hook = RegistryPrompt(path, "kb_qa@production")
    with caplog.at_level(logging.WARNING, logger="lmops.serve"):
        assert hook(QUESTION) == (QUESTION, "none")
        assert hook(QUESTION) == (QUESTION, "none")
    assert sum("not found" in r.getMessage() for r in caplog.records) == 1  # one warning, not one per request
    PromptRegistry(path, {"prompts": {}}).save()  # a registry without the served prompt yet
    assert hook(QUESTION) == (QUESTION, "none") and "no prompt 'kb_qa'" in caplog.text
    seeded_registry(path)
    touch_later(path)
    assert hook(QUESTION) == (QUESTION, "kb_qa@1")  # appeared: used from the next request on
    path.write_text("{ not json")
    touch_later(path)
    with caplog.at_level(logging.ERROR, logger="lmops.serve"):
        assert hook(QUESTION) == (QUESTION, "kb_qa@1")  # the last good prompt stays
    assert "could not be read" in caplog.text


def test_request_parsing_and_bad_refs():
    assert kb_qa_vars("D.\nQuestion: a\nAnswer: b\nQuestion: c?\nAnswer:") == \
        {"context": "D.\nQuestion: a\nAnswer: b", "question": "c?"}
    assert kb_qa_vars("just text") == {"context": "", "question": "just text"}
    from lmops.io import InputError

    with pytest.raises(InputError, match="renders kb_qa prompts, not 'incident_category'"):
        RegistryPrompt("x.json", "incident_category@production")


def test_server_logs_the_registry_version(tiny_root, tmp_path):
    """The default hook (`serve.prompt_hook: registry`) in a project: logged prompt_version = kb_qa@N."""
    from lmops.serve import running_server
    from lmops.serve.logstore import read_logs

    root = tmp_path / "proj"
    shutil.copytree(tiny_root / "models" / "base", root / "models" / "base")
    seeded_registry(root / "prompt_registry" / "registry.json")
    sp = ServeParams(port=0, log_dir=str(tmp_path / "logs"), log_flush_seconds=0.1, reload_seconds=0)
    assert sp.prompt_hook == "registry" and isinstance(registry_hook(sp, root), RegistryPrompt)
    with running_server(sp, root) as (url, srv):
        r = httpx.post(f"{url}/v1/completions", json={"prompt": QUESTION, "max_tokens": 2}, timeout=30)
        chat = httpx.post(f"{url}/v1/chat/completions", timeout=30,
                          json={"messages": [{"role": "user", "content": "who makes Kavin-123"}], "max_tokens": 2})
    assert r.status_code == 200 and chat.status_code == 200
    df = read_logs(tmp_path / "logs")
    assert set(df["prompt_version"]) == {"kb_qa@1"}
    assert set(df["rendered_prompt"]) == {QUESTION, qa_text("who makes Kavin-123")}
