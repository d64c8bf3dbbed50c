"""`lmops simulate`: drift shares and onsets, request content, and a run against a real server."""
from __future__ import annotations

import time

import pytest

from lmops.params import ParamsError, SimulateParams, validate
from lmops.serve.simulate import Traffic

DRIFTED = {"topic": {"share": 0.3, "onset": 500}, "style": {"share": 0.1, "onset": 200},
           "ood": {"share": 0.05, "onset": 800}}


def shares(kinds: list[str]) -> dict[str, float]:
    return {k: kinds.count(k) / len(kinds) for k in ("normal", "topic", "style", "ood")}


def test_drift_shares_and_onsets(tiny_corpus):
    traffic = Traffic(SimulateParams(**DRIFTED), tiny_corpus)
    kinds = [traffic.kind(i) for i in range(3000)]
    assert shares(kinds[:200])["normal"] == 1.0  # nothing before the first onset
    assert shares(kinds[200:500]) == pytest.approx({"normal": 0.9, "topic": 0, "style": 0.1, "ood": 0}, abs=0.04)
    late = shares(kinds[800:])
    assert late == pytest.approx({"normal": 0.55, "topic": 0.3, "style": 0.1, "ood": 0.05}, abs=0.03)
    assert kinds == [traffic.kind(i) for i in range(3000)]  # deterministic for a seed


def test_onset_in_seconds(tiny_corpus):
    sim = SimulateParams(topic={"share": 1.0, "onset_seconds": 30})
    traffic = Traffic(sim, tiny_corpus)
    assert {traffic.kind(i, elapsed=10.0) for i in range(50)} == {"normal"}
    assert {traffic.kind(i, elapsed=31.0) for i in range(50)} == {"topic"}


def test_requests_look_like_their_kind(tiny_corpus):
    traffic = Traffic(SimulateParams(**DRIFTED), tiny_corpus)
    known = {e["name"] for e in tiny_corpus.entities}
    reqs = [traffic.request(i) for i in range(800, 1400)]
    by_kind = {k: [r for r in reqs if r.kind == k] for k in ("normal", "topic", "style", "ood")}
    assert all(by_kind.values())
    for r in by_kind["normal"]:
        assert "\nQuestion: " in r.body["prompt"] and any(n in r.body["prompt"] for n in known)
    for r in by_kind["topic"]:  # unseen equipment: a fresh kind, and no known entity
        assert not any(n in r.body["prompt"] for n in known)
        assert any(k in r.body["prompt"] for k in ("centrifuge", "extruder", "furnace", "mixer")) \
            or "Which category" in r.body["prompt"] or "Question:" in r.body["prompt"]
    for r in by_kind["style"]:
        assert r.endpoint == "/v1/chat/completions" and "Question:" not in r.body["messages"][-1]["content"]
    assert all("minutes" in r.body["prompt"] for r in by_kind["ood"])
    assert {r.body["user"] for r in reqs} == {f"sim:{k}" for k in by_kind}


def test_shares_over_one_is_a_params_error():
    with pytest.raises(ParamsError, match="at most 1"):
        validate({"simulate": {"topic": {"share": 0.7}, "ood": {"share": 0.5}}})


def test_simulate_against_a_server(tiny_root, tiny_corpus, tmp_path):
    from lmops.params import ServeParams
    from lmops.serve import running_server
    from lmops.serve.logstore import read_logs
    from lmops.serve.simulate import send

    sp = ServeParams(port=0, log_dir=str(tmp_path / "logs"), log_flush_seconds=0.1, reload_seconds=0)
    # The tiny model's context is 96 tokens: closed-book questions only (documents would not fit).
    sim = SimulateParams(max_tokens=4, incident_share=0, open_book_share=0, topic={"share": 0.5, "onset": 6}, style={"share": 0.2, "onset": 6})
    with running_server(sp, tiny_root) as (url, srv):
        result = send(Traffic(sim, tiny_corpus), url, requests=16, concurrency=4)
        deadline = time.monotonic() + 10
        while srv.logs.backlog and time.monotonic() < deadline:
            time.sleep(0.05)
    assert sum(result.sent.values()) == 16 and not result.failed, result.errors[:3]
    df = read_logs(tmp_path / "logs")
    assert len(df) == 16 and (df["status"] == 200).all()
    assert df["user"].value_counts().to_dict() == {f"sim:{k}": n for k, n in result.sent.items()}
