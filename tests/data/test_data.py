from lmops.data.generate import generate
from lmops.params import DataParams


def _corpus(seed=0):
    p = DataParams(entities=30, recall_items=40, ood_sentences=16, seed=seed)
    return generate(p.seed, p.entities, p.incidents_per_entity, p.recall_items, p.recall_filler,
                    p.ood_sentences, (p.val_share, p.test_share))


def test_generator_is_deterministic_and_seeded():
    assert _corpus(0) == _corpus(0)
    assert _corpus(0)["documents"] != _corpus(1)["documents"]


def test_splits_are_disjoint_by_entity():
    corpus = _corpus()
    by_split = {s: {e["name"] for e in corpus["entities"] if e["split"] == s} for s in ("train", "val", "test")}
    assert all(by_split.values())
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
    assert {d["split"] for d in corpus["documents"]} == {"train", "val", "test"}


def test_answers_lie_in_their_documents():
    corpus = _corpus()
    assert all(q["answer"].removeprefix("the ") in q["doc"] for q in corpus["qa"])
    assert all(r["answer"] in r["context"] and r["answer"] not in r["question"] for r in corpus["recall"])


def test_recall_lead_restates_the_note_without_the_code():
    """The answer's lead is the note's own words up to the code: copying continues it with the code."""
    for r in _corpus()["recall"]:
        for question, lead, code in [(r["question"], r["lead"], r["answer"]), *r["more"]]:
            assert f"{lead[0].lower()}{lead[1:]} {code}." in r["context"] and code not in lead
            assert lead.removeprefix("The ").removesuffix(" is") in question


def test_every_profile_question_has_a_lead_without_its_answer():
    """KB-QA leads (`qa_lead`): every profile question restated up to its answer ("Who makes X?" ->
    "X is made by"), one distinct lead per question of an entity, never giving the answer away."""
    from lmops.data.generate import qa_lead

    by_entity: dict[str, set] = {}
    for q in _corpus()["qa"]:
        lead = qa_lead(q["question"])
        assert lead and q["entity"] in lead and q["answer"].removeprefix("the ") not in lead, lead
        by_entity.setdefault(q["entity"], set()).add(lead)
    assert {len(leads) for leads in by_entity.values()} == {7}
    assert qa_lead("Who makes X-1?") == "X-1 is made by" and qa_lead("What colour is the sky?") == ""


def test_build_corpus_is_atomic(tmp_path, monkeypatch):
    import pytest

    import lmops.data as data
    from lmops.io import write_jsonl

    out = tmp_path / "corpus"
    data.build_corpus(DataParams(entities=20, recall_items=20, ood_sentences=8), out)
    before = sorted(p.name for p in out.iterdir())

    calls = []

    def failing(path, rows):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        write_jsonl(path, rows)

    monkeypatch.setattr(data, "write_jsonl", failing)
    with pytest.raises(OSError):
        data.build_corpus(DataParams(entities=25, recall_items=20, ood_sentences=8), out)
    assert sorted(p.name for p in out.iterdir()) == before  # the old corpus is intact
    assert data.Corpus.load(out).entities and len(data.Corpus.load(out).entities) == 20
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dir left
