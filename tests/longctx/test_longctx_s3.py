"""Item 3 of the scale-out: the retrieval index on object storage (LanceDB on a loopback S3 server):
build, add incrementally, search, reopen from a fresh connection; credentials only from the environment."""
from __future__ import annotations

import pytest

from lmops.longctx.chunking import ChunkConfig

PLANTED = {"id": "planted", "text": "Note: the access code for vault ZQ-77 is 4321."}
CFG = ChunkConfig(48, 12, 96)


@pytest.fixture
def s3_env(s3, monkeypatch):
    """Credentials in the environment only; the endpoint and allow_http are storage options (params)."""
    for k, v in s3.env.items():
        if k not in ("AWS_ENDPOINT_URL", "AWS_ALLOW_HTTP"):
            monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ALLOW_HTTP", raising=False)
    return {"aws_endpoint": s3.endpoint, "allow_http": "true"}


def test_index_on_s3_builds_grows_searches_and_reopens(s3, s3_env, tiny_corpus, tiny_model):
    from lmops.longctx.retrieval import ChunkIndex, open_or_create

    _, tok = tiny_model
    uri = s3.bucket("lmops-index") + "/long_context_index"
    idx = open_or_create(uri, "kb", s3_env)
    docs = [{"id": d["id"], "text": d["text"]} for d in tiny_corpus.documents[:12]]
    assert idx.add_documents(docs + [PLANTED], tok, CFG) > 12
    v1, rows = idx.version, len(idx)
    assert idx.add_documents([PLANTED], tok, CFG) == 0  # incremental: nothing re-embedded
    new = {"id": "new-doc", "text": "The furnace Zorba-101 is made by Quill Works."}
    assert idx.add_documents([new], tok, CFG) == 1 and idx.version > v1
    assert any(k.startswith("long_context_index/kb.lance/") for k in s3.keys("lmops-index"))

    again = open_or_create(uri, "kb", s3_env)  # listed: opened, never recreated
    assert len(again) == rows + 1 and again.version == idx.version
    reopened = ChunkIndex.open(uri + "/", "kb", s3_env)  # a fresh connection, as on another machine
    for mode in ("vector", "fts", "hybrid"):
        assert reopened.search("What is the access code for vault ZQ-77?", k=2, mode=mode)[0]["doc"] == "planted"
    assert reopened.search("Who makes Zorba-101?", k=1)[0]["doc"] == "new-doc"


def test_missing_bucket_is_a_clear_error(s3, s3_env):
    from lmops.longctx.retrieval import RetrievalError, open_or_create

    with pytest.raises(RetrievalError, match="s3://lmops-no-such-bucket/idx"):
        open_or_create("s3://lmops-no-such-bucket/idx", "kb", s3_env)


def test_params_take_a_uri_and_refuse_secrets(tiny_params):
    from lmops.errors import ParamsError
    from lmops.params import validate
    from tests.conftest import TINY

    ok = {**TINY, "long_context": {**TINY["long_context"], "retrieval": {
        **TINY["long_context"]["retrieval"], "index": "s3://b/idx", "storage_options": {"aws_endpoint": "http://h:1"}}}}
    assert validate(ok).long_context.retrieval.index == "s3://b/idx"
    bad = {**ok, "long_context": {**ok["long_context"], "retrieval": {
        **ok["long_context"]["retrieval"], "storage_options": {"aws_secret_access_key": "x"}}}}
    with pytest.raises(ParamsError, match="aws_secret_access_key"):
        validate(bad)
