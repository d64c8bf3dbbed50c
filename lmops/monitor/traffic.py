"""Simulated production traffic without HTTP: requests drawn like `lmops simulate` draws them, answered
by the model in-process, and logged with the server's log schema. Used by the `drift` stage's
reference window and by `benchmarks/drift.py` (20 in-distribution windows in seconds, not minutes).

Request mix: questions about the plant's equipment, half closed-book, half with the equipment's
profile as context. Drift knobs: `topic` (questions about never-seen equipment kinds, FRESH_KINDS),
`style` (users phrase requests differently) and `ood` (out-of-domain text).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from lmops.data import Corpus
from lmops.data.generate import FRESH_KINDS, entity_records, make_entities, profile_doc, qa_pairs, qa_text

STYLE = ["hey, quick one: {q} thanks!!", "URGENT -- {q} need it asap", "pls tell me... {q} :)",
         "{q} (asking for the night shift)"]


@dataclass(frozen=True)
class Drift:
    topic: float = 0.0
    style: float = 0.0
    ood: float = 0.0


def fresh_entities(seed: int, count: int):
    """Equipment of kinds the model never saw: the drifted topic. Seeded apart from the corpus."""
    return make_entities(seed + 7919, count, FRESH_KINDS, incidents=1, splits=(0.0, 0.0))


def fresh_documents(seed: int, count: int) -> list[dict]:
    """The documentation of the fresh equipment, as the domain team would publish it."""
    rng = random.Random(seed)
    return [d for e in fresh_entities(seed, count) for d in entity_records(rng, e)]


def fresh_qa(seed: int, count: int) -> list[dict]:
    return [{"entity": e.name, "doc": profile_doc(e), "question": q, "answer": a}
            for e in fresh_entities(seed, count) for q, a in qa_pairs(e)]


def make_requests(corpus: Corpus, fresh: list[dict], n: int, drift: Drift, rng: random.Random) -> list[dict]:
    """`n` requests: {prompt, topic}; `fresh` are QA rows of the never-seen equipment."""
    out = []
    for _ in range(n):
        u = rng.random()
        if u < drift.ood:
            text = rng.choice(corpus.ood)["text"]
            out.append({"prompt": text[:rng.randint(80, 300)], "topic": "ood"})
            continue
        topic = "fresh" if u < drift.ood + drift.topic else "known"
        row = rng.choice(fresh if topic == "fresh" else corpus.qa)
        question = row["question"]
        if rng.random() < drift.style:
            question = rng.choice(STYLE).format(q=question)
        context = row["doc"] if rng.random() < 0.5 else ""
        out.append({"prompt": context + qa_text(question), "topic": topic})
    return out


def answer_and_log(model, tokenizer, requests: list[dict], start: datetime, seconds_per_request: float,
                   max_new_tokens: int = 12, version: str = "v0", batch_size: int = 16) -> list[dict]:
    """Answer requests in batches and return log rows with timestamps spread from `start`."""
    from lmops.model.evaluate import generate_answers

    rows = []
    for i in range(0, len(requests), batch_size):
        batch = requests[i:i + batch_size]
        t0 = time.perf_counter()
        answers = generate_answers(model, tokenizer, [r["prompt"] for r in batch], max_new_tokens, batch_size)
        latency = (time.perf_counter() - t0) * 1000 / len(batch)
        for j, (req, ans) in enumerate(zip(batch, answers)):
            ts = start + timedelta(seconds=(i + j) * seconds_per_request)
            rows.append({"ts": ts, "prompt": req["prompt"], "response": ans, "latency_ms": latency,
                         "model_version": version, "prompt_version": "qa-v1", "topic": req["topic"]})
    return rows


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
