"""The promotion gate and the evaluations it reads: QA on held-out questions of the drifted topic (the
new data; open-book through the knowledge index, and closed-book) and the base report card's open-book
QA on the old test split."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from lmops.data import Corpus
from lmops.data.generate import qa_text
from lmops.errors import LmopsError
from lmops.params import RetrainParams


class GateError(LmopsError, ValueError):
    """The gate cannot judge honestly: a gate item was trained on, or its metric was not measured."""


def closed_book_qa(model, tokenizer, qa: list[dict], max_new_tokens: int = 12) -> float:
    """Exact match on questions asked with no document: what the model itself knows."""
    from lmops.data.generate import qa_lead
    from lmops.model.evaluate import exact_match, generate_answers
    from lmops.model.generate import chat_prompt, has_chat_template

    if not qa:
        return float("nan")
    chat = has_chat_template(tokenizer)  # an instruct model: the question as its turn, the answer's lead opened
    preds = generate_answers(model, tokenizer, [chat_prompt(tokenizer, r["question"], qa_lead(r["question"])) if chat
                                                else qa_text(r["question"]) for r in qa], max_new_tokens)
    return round(exact_match(preds, [r["answer"] for r in qa]), 4)


def answer_logprob(model, tokenizer, qa: list[dict]) -> float:
    """Mean log-probability per token of the true answers, closed-book: finer-grained than exact match
    (it moves before the greedy answer flips), so tiny models can be gated on it too."""
    import torch

    total, count = 0.0, 0
    for r in qa:
        prompt = tokenizer(qa_text(r["question"]), add_special_tokens=False)["input_ids"]
        answer = tokenizer(" " + r["answer"], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + answer])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)  # (T-1, V)
        targets = ids[0, 1:]
        total += float(logp[torch.arange(len(targets)), targets][-len(answer):].sum())
        count += len(answer)
    return round(total / max(1, count), 4)


def old_test_qa(model, tokenizer, corpus: Corpus, items: int, max_new_tokens: int = 12) -> float:
    """The base evaluation's open-book KB QA on the test entities (what the champion was chosen on)."""
    from lmops.model.evaluate import exact_match, generate_answers, kb_qa_items
    from lmops.model.generate import has_chat_template

    prompts, answers = kb_qa_items(corpus, "test", items, tokenizer if has_chat_template(tokenizer) else None)
    return round(exact_match(generate_answers(model, tokenizer, prompts, max_new_tokens), answers), 4)


def open_book_qa(model, tokenizer, qa: list[dict], retrieve, max_new_tokens: int = 12) -> float:
    """Exact match with `retrieve(question)` (the knowledge index's top chunks) as the document, in the
    same open-book format as `old_test_qa` (the chat template, and the question's lead, when the model
    has one)."""
    from lmops.data.generate import qa_lead
    from lmops.model.evaluate import chat_qa_prompt, exact_match, generate_answers, qa_prompt
    from lmops.model.generate import has_chat_template

    if not qa:
        return float("nan")
    chat = has_chat_template(tokenizer)
    prompts = [chat_qa_prompt(tokenizer, retrieve(r["question"]), r["question"], qa_lead(r["question"])) if chat
               else qa_prompt(retrieve(r["question"]), r["question"]) for r in qa]
    return round(exact_match(generate_answers(model, tokenizer, prompts, max_new_tokens), [r["answer"] for r in qa]), 4)


def evaluate_candidate(model, tokenizer, corpus: Corpus, fresh_qa: list[dict], trained_questions: set[str],
                       items: int, gate_qa: list[dict] | None = None, retrieve=None) -> dict[str, float]:
    """The gate reads only `gate_qa`, the held-out items (`fresh.gate_split`: no training text asks
    them, the index holds no question): `new_qa_heldout` closed-book, `new_qa_heldout_rag` open-book
    on what `retrieve` (the candidate's knowledge-index version) finds, `new_answer_logprob` on their
    answers. For reference, not gated: `new_qa` mixes trained and untrained questions as users do;
    `new_qa_trained` / `new_qa_untrained` split them (memorised answers vs facts read in training)."""
    seen = [r for r in fresh_qa if r["question"] in trained_questions]
    unseen = [r for r in fresh_qa if r["question"] not in trained_questions]
    held = (gate_qa if gate_qa is not None else unseen)[:items]
    if any(r["question"] in trained_questions for r in held):
        raise GateError("a gate question is in the retraining data: the gate must read held-out items only")
    out = {"new_qa": closed_book_qa(model, tokenizer, fresh_qa[:items * 3]),
           "new_answer_logprob": answer_logprob(model, tokenizer, held),
           "new_qa_trained": closed_book_qa(model, tokenizer, seen[:items]),
           "new_qa_untrained": closed_book_qa(model, tokenizer, unseen[:items]),
           "new_qa_heldout": closed_book_qa(model, tokenizer, held),
           "heldout_items": len(held),
           "old_test_qa": old_test_qa(model, tokenizer, corpus, items)}
    if retrieve is not None:
        out["new_qa_heldout_rag"] = open_book_qa(model, tokenizer, held, retrieve)
    return out


@dataclass
class Decision:
    promote: bool
    reason: str
    champion: dict
    challenger: dict

    def as_dict(self) -> dict:
        return asdict(self)


def gate(champion: dict[str, float], challenger: dict[str, float], p: RetrainParams) -> Decision:
    """Promote only if better on the new data and within `tolerance` on the old test split."""
    key = p.gate_metric
    if key not in champion or key not in challenger:
        raise GateError(f"drift.retrain.gate_metric {key!r} was not measured (no knowledge index for "
                         "new_qa_heldout_rag?): measured " + ", ".join(sorted(challenger)))
    # Rounded: exact-match rates are counts over items, and 0.87 - 0.82 is 0.05000000000000004 in floats,
    # which would refuse a challenger exactly at the tolerance ("no worse than" includes equal).
    gain = round(challenger[key] - champion[key], 6)
    loss = round(champion["old_test_qa"] - challenger["old_test_qa"], 6)
    if gain <= p.min_gain:
        reason = f"not better on the new data: {key} {champion[key]:.3f} -> {challenger[key]:.3f}"
        return Decision(False, reason, champion, challenger)
    if loss > p.tolerance:
        reason = (f"worse on the old test split beyond tolerance {p.tolerance}: "
                  f"old_test_qa {champion['old_test_qa']:.3f} -> {challenger['old_test_qa']:.3f}")
        return Decision(False, reason, champion, challenger)
    reason = (f"{key} {champion[key]:.3f} -> {challenger[key]:.3f} (+{gain:.3f}); "
              f"old_test_qa {champion['old_test_qa']:.3f} -> {challenger['old_test_qa']:.3f} (tolerance {p.tolerance})")
    return Decision(True, reason, champion, challenger)
