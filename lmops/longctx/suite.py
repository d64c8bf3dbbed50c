"""The long-context evaluation suite, generated offline from a seed (never from the training data):

- passkey items: an access-code note (the base model's in-context recall format) hidden at a given
  depth in filler text, swept over prompt lengths that are multiples of the trained context;
- knowledge-base QA: documents of fresh entities (kinds never trained on, names not in the corpus),
  one question per item whose answer sits in one profile among many distractor documents;
- perplexity text: held-out (validation) documents, for perplexity by position.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from lmops.data.generate import FILLER, entity_records, fresh_entities, profile_doc, qa_pairs, qa_text, recall_fact


@dataclass
class Item:
    """One question over a long context. `docs` are the context's documents in order; `context` is
    them joined, the text every method reads (or retrieves from)."""
    id: str
    docs: list[str]
    question: str
    answer: str
    gold: str  # the text that holds the answer (the needle, or the gold profile)
    length: int = 0  # passkey: prompt length in tokens it was built for
    depth: float = 0.0  # passkey: where the needle sits, 0 = start, 1 = end
    meta: dict = field(default_factory=dict)
    lead: str = ""  # the answer's restated start (passkey items), see qa_text

    @property
    def context(self) -> str:
        return " ".join(self.docs)

    @property
    def prompt(self) -> str:
        return qa_text(self.question, lead=self.lead)


_LEADS = [(r"What is the (.+) of (.+)\?", "The {0} of {1} is"), (r"Who makes (.+)\?", "{0} is made by"),
          (r"Where is (.+) located\?", "{0} is located in"), (r"Which team services (.+)\?", "{0} is serviced by"),
          (r"How often is (.+) serviced\?", "{0} is serviced"), (r"When was (.+) installed\?", "{0} was installed in")]


def answer_lead(question: str) -> str:
    """The restated start of the answer to a KB question ("Who makes X?" -> "X is made by"), for a chat
    model's assistant turn, which then continues with the answer itself; "" for a question of another
    form."""
    import re

    for pattern, lead in _LEADS:
        if m := re.fullmatch(pattern, question):
            return lead.format(*m.groups())
    return ""


def _n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def passkey_item(rng: random.Random, tokenizer, length: int, depth: float, reserve: int, uid: str) -> Item:
    """Filler sentences around one access-code note, so that context + question fill `length - reserve`
    tokens; the note goes after `depth` of the filler."""
    fact = recall_fact(rng)  # the corpus' own recall format, so the task is natural
    needle = fact.note
    budget = (length - reserve - _n_tokens(tokenizer, qa_text(fact.question, lead=fact.lead))
              - _n_tokens(tokenizer, " " + needle))
    filler: list[str] = []
    used = 0
    while True:
        s = rng.choice(FILLER)
        cost = _n_tokens(tokenizer, " " + s)
        if used + cost > budget:
            break
        filler.append(s)
        used += cost
    at = round(depth * len(filler))
    docs = filler[:at] + [needle] + filler[at:]
    return Item(id=uid, docs=docs, question=fact.question, answer=fact.code, gold=needle, length=length, depth=depth,
                lead=fact.lead)


def passkey_suite(tokenizer, seed: int, lengths: list[int], depths: list[float], per_cell: int,
                  reserve: int) -> list[Item]:
    rng = random.Random(seed)
    return [passkey_item(rng, tokenizer, L, d, reserve, f"pk-{L}-{d}-{i}")
            for L in lengths for d in depths for i in range(per_cell)]


def fresh_kb(seed: int, entities: int, exclude_names: set[str]) -> tuple[list, list[dict]]:
    """Entities of kinds never trained on, minus any name the corpus has, and their documents."""
    ents = [e for e in fresh_entities(seed, entities + len(exclude_names) // 50 + 8)
            if e.name not in exclude_names][:entities]
    rng = random.Random(seed + 1)
    docs = [{**d, "split": "fresh", "group": "kb"} for e in ents for d in entity_records(rng, e)]
    return ents, docs


def kb_suite(tokenizer, seed: int, entities: list, docs: list[dict], questions: int, context_tokens: int,
             reserve: int) -> list[Item]:
    """Each item: one question on one entity; its context is the gold profile among random other
    documents, filling `context_tokens` (far beyond the trained context)."""
    rng = random.Random(seed + 2)
    by_id = {d["id"]: d for d in docs}
    items = []
    for i in range(questions):
        e = entities[i % len(entities)]
        question, answer = rng.choice(qa_pairs(e))
        gold = profile_doc(e)
        gold_id = f"{e.name}/profile0"
        assert by_id[gold_id]["text"] == gold
        budget = context_tokens - reserve - _n_tokens(tokenizer, qa_text(question)) - _n_tokens(tokenizer, gold)
        others = [d for d in docs if d["entity"] != e.name]
        rng.shuffle(others)
        chosen, used = [], 0
        for d in others:
            cost = _n_tokens(tokenizer, " " + d["text"])
            if used + cost > budget:
                break
            chosen.append(d["text"])
            used += cost
        chosen.insert(rng.randint(0, len(chosen)), gold)
        items.append(Item(id=f"kb-{i}", docs=chosen, question=question, answer=answer, gold=gold,
                          meta={"gold_doc": gold_id}))
    return items
