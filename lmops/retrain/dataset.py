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


def retrain_texts(logs: pd.DataFrame, documents: list[dict], qa: list[dict], seed: int,
                  faq_per_entity: int = 3) -> tuple[list[str], dict]:
    """Fine-tuning texts and their provenance.

    - every fresh document; profiles carry `faq_per_entity` of their QA pairs (the corpus' format);
    - every production question about fresh equipment, answered from the documents (never from the
      model's own logged answer, which is what drifted).
    """
    rng = random.Random(seed)
    by_entity: dict[str, list[dict]] = {}
    for row in qa:
        by_entity.setdefault(row["entity"], []).append(row)
    texts, faq = [], set()
    for doc in documents:
        text = doc["text"]
        if doc["kind"] == "profile":
            for row in rng.sample(by_entity[doc["entity"]], min(faq_per_entity, len(by_entity[doc["entity"]]))):
                text += qa_text(row["question"], row["answer"])
                faq.add(row["question"])
        texts.append(text)
    answers = {row["question"]: row for row in qa}
    asked = sorted({q for q in asked_questions(logs) if q in answers})
    # closed-book: the fix is for the model to know the new equipment, not to copy it from a prompt
    texts += [qa_text(q, answers[q]["answer"]) for q in asked]
    return texts, {"documents": len(documents), "faq_questions": sorted(faq), "asked_questions": asked,
                   "log_rows": len(logs)}


def write_snapshot(out: Path, texts: list[str], provenance: dict, window: dict) -> dict:
    """The dataset directory: texts.jsonl + manifest.json (what went in, from which window)."""
    manifest = {"window": window, "texts": len(texts), **{k: v for k, v in provenance.items()}}
    with atomic_dir(out) as tmp:
        write_jsonl(tmp / "texts.jsonl", [{"text": t} for t in texts])
        write_json(tmp / "manifest.json", manifest)
    return manifest
