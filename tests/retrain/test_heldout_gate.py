"""The gate judges only held-out items of the drifted topic: questions that no retraining text asks
(not even when users asked them) and that the knowledge index does not hold; retraining adds the
topic's documents to the index as a new LanceDB version, and the champion is judged on the old one."""
from __future__ import annotations

import pandas as pd
import pytest

from lmops.params import RetrainParams, SimulateParams
from lmops.retrain.dataset import retrain_texts
from lmops.retrain.fresh import fresh_documents, fresh_qa, gate_split

SIM = SimulateParams(fresh_entities=6)


def _asking(questions: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"prompt": [f"doc\nQuestion: {q}\nAnswer:" for q in questions]})


def test_gate_split_is_per_entity_disjoint_and_fixed():
    qa = fresh_qa(SIM)
    train, held = gate_split(qa, 2, seed=0)
    assert {r["question"] for r in train}.isdisjoint(r["question"] for r in held)
    assert len(train) + len(held) == len(qa)
    per_entity = pd.Series([r["entity"] for r in held]).value_counts()
    assert len(per_entity) == SIM.fresh_entities and set(per_entity) == {2}
    assert gate_split(qa, 2, seed=0)[1] == held  # chosen by the seed, not by the data
    assert gate_split(qa, 2, seed=1)[1] != held


def test_gate_questions_are_never_retraining_texts_even_when_asked():
    qa, docs = fresh_qa(SIM), fresh_documents(SIM)
    _, held = gate_split(qa, 2, seed=0)
    gate = {r["question"] for r in held}
    logs = _asking([r["question"] for r in qa])  # users asked every question, the gate's included
    texts, prov = retrain_texts(logs, docs, qa, seed=0, faq_per_entity=3, qa_repeats=2, heldout=gate)
    assert prov["gate_questions"] == sorted(gate)
    assert gate.isdisjoint(prov["faq_questions"]) and gate.isdisjoint(prov["asked_questions"])
    assert not [q for q in gate for t in texts if q in t], "a gate question leaked into the retraining texts"
    assert len(prov["asked_questions"]) == len(qa) - len(gate)  # every other asked question is trained


def test_evaluation_refuses_a_gate_item_that_was_trained(tiny_model, tiny_corpus):
    from lmops.retrain.gate import GateError, evaluate_candidate

    qa = fresh_qa(SIM)
    model, tok = tiny_model
    with pytest.raises(GateError, match="gate question is in the retraining data"):
        evaluate_candidate(model, tok, tiny_corpus, qa, {qa[0]["question"]}, 4, gate_qa=qa[:2])


def test_index_gets_the_new_documents_as_a_new_version_and_never_a_gate_question(tiny_params, tiny_model,
                                                                                  tiny_corpus, tiny_root, tmp_path):
    from lmops.retrain.index import Retriever, update

    qa, docs = fresh_qa(SIM), fresh_documents(SIM)
    _, held = gate_split(qa, 2, seed=0)
    _, tok = tiny_model
    old = tiny_corpus.documents[:12]
    ix = update(tiny_params, tmp_path, docs, tok, old)
    assert ix.before < ix.after and ix.added_documents == len(docs)
    after, before = Retriever(ix.path, ix.after, tiny_params), Retriever(ix.path, ix.before, tiny_params)
    entity = held[0]["entity"]
    assert entity in after.context(held[0]["question"])  # the new topic's documents are found
    assert entity not in before.context(held[0]["question"])  # the champion's index predates them
    chunks = " ".join(after.texts())
    assert not [r["question"] for r in held if r["question"] in chunks], "a gate question is in the index"
    assert "Question:" not in chunks and "Answer:" not in chunks  # documents only, no QA texts
    again = update(tiny_params, tmp_path, docs, tok, old)  # incremental: nothing new, nothing added
    assert (again.before, again.added_chunks, again.chunks) == (ix.after, 0, ix.chunks)
    # The flow's evaluation: the champion on the index before, plus what the updated index alone buys.
    from lmops.retrain.run import evaluate

    p = tiny_params.model_copy(update={"simulate": SIM, "drift": tiny_params.drift.model_copy(update={
        "retrain": tiny_params.drift.retrain.model_copy(update={"eval_items": 3, "threads": 1})})})
    champ = evaluate(p, tiny_root, tiny_root / "models" / "base", set(), ix.as_dict(), ix.before)
    assert champ["index_version"] == ix.before and champ["heldout_items"] == 3
    assert {"new_qa_heldout_rag", "new_qa_heldout_rag_new_index", "new_qa_heldout"} <= set(champ)
    chall = evaluate(p, tiny_root, tiny_root / "models" / "base", set(), ix.as_dict())
    assert chall["index_version"] == ix.after and "new_qa_heldout_rag_new_index" not in chall


@pytest.mark.parametrize("metric", ["new_qa", "new_qa_trained"])
def test_gate_metric_must_be_a_held_out_measure(metric):
    from lmops.params import ParamsError, validate

    with pytest.raises(ParamsError, match=r"drift\.retrain"):
        validate({"drift": {"retrain": {"gate_metric": metric}}})
    assert RetrainParams().gate_metric == "new_qa_heldout_rag"
