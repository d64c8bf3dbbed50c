"""The retraining dataset: drifted production questions labelled from the fresh domain documents,
plus those documents, as one directory that DVC versions (`dvc add`, done by the flow)."""
from __future__ import annotations

import random
import re
from pathlib import Path

import pandas as pd

from lmops.data.generate import qa_text
from lmops.io import atomic_dir, write_json, write_jsonl

QUESTION = re.compile(r"Question: (.*?)\nAnswer:", re.S)


def asked_questions(logs: pd.DataFrame) -> list[str]:
    """The questions users asked in the logged prompts (styled phrasing stripped to the question)."""
    out = []
    for prompt in logs["prompt"].astype(str):
        m = QUESTION.search(prompt)
        if m:
            q = re.search(r"(What|Who|Where|Which|How|When)[^?]*\?", m.group(1))
            out.append(q.group(0) if q else m.group(1).strip())
    return out


def retrain_texts(logs: pd.DataFrame, documents: list[dict], qa: list[dict], seed: int, faq_per_entity: int = 3,
                  qa_repeats: int = 1, kinds: tuple[str, ...] = ("profile", "procedure", "incident"),
                  heldout: frozenset[str] | set[str] = frozenset()) -> tuple[list[str], dict]:
    """Fine-tuning texts and their provenance.

    - the fresh documents of `kinds`; a profile carries `faq_per_entity` of its QA pairs (the
      corpus' open-book format, which keeps the model reading answers from a document);
    - those FAQ questions and every production question about fresh equipment (answered from the
      documents, never from the model's own logged answer, which is what drifted) as closed-book
      QA texts, `qa_repeats` times each.

    Closed-book, because that is what the gate measures and what users do: a question appended to
    its document is answered by copying from the text just above it, so the loss falls without the
    model learning the fact (measured: +1 point of closed-book QA after 80 steps). Repeated, because
    a 1M-parameter model recalls a fact only after tens of exposures. The entities' other questions
    stay out of training: `new_qa_untrained` measures them. `heldout` questions (the gate's,
    `fresh.gate_split`) are never trained on, not even when users asked them.
    """
    rng = random.Random(seed)
    by_entity: dict[str, list[dict]] = {}
    for row in qa:
        if row["question"] not in heldout:
            by_entity.setdefault(row["entity"], []).append(row)
    texts, faq = [], []
    for doc in documents:
        if doc["kind"] not in kinds:
            continue
        text = doc["text"]
        if doc["kind"] == "profile":
            pool = by_entity.get(doc["entity"], [])
            rows = rng.sample(pool, min(faq_per_entity, len(pool)))
            text += "".join(qa_text(row["question"], row["answer"]) for row in rows)
            faq += [row["question"] for row in rows]
        texts.append(text)
    answers = {row["question"]: row for row in qa if row["question"] not in heldout}
    asked = sorted({q for q in asked_questions(logs) if q in answers})
    trained = sorted(set(faq) | set(asked))
    texts += [qa_text(q, answers[q]["answer"]) for q in trained] * qa_repeats
    return texts, {"documents": len(documents), "document_kinds": list(kinds), "faq_questions": sorted(faq),
                   "asked_questions": asked, "gate_questions": sorted(heldout), "qa_repeats": qa_repeats, "log_rows": len(logs)}


def write_snapshot(out: Path, texts: list[str], provenance: dict, window: dict,
                   documents: list[dict] | None = None) -> dict:
    """The dataset directory: texts.jsonl + manifest.json (what went in, from which window), and
    documents.jsonl: the drifted topic's documents, which retraining adds to the knowledge index."""
    manifest = {"window": window, "texts": len(texts), **{k: v for k, v in provenance.items()}}
    with atomic_dir(out) as tmp:
        write_jsonl(tmp / "texts.jsonl", [{"text": t} for t in texts])
        if documents is not None:
            write_jsonl(tmp / "documents.jsonl", documents)
        write_json(tmp / "manifest.json", manifest)
    return manifest
