"""Realistic raw user prompts for knowledge-base QA: what people actually type. Each raw prompt
keeps the pasted document (`context`, empty when the user forgot it) and the message (`request`),
and remembers the clean question it stands for (the refiner's training target)."""
from __future__ import annotations

import random
from dataclasses import dataclass

from lmops.prompts.harness import Item

# Casual phrasings per attribute, keyed by the start of the corpus' canonical question.
CASUAL = {
    "What is the operating pressure": ["pressure of {n}?", "{n} pressure", "what pressure does {n} run at",
                                       "tell me the operating pressure for {n}", "how many bar is {n}"],
    "Who makes": ["who made {n}", "{n} manufacturer?", "maker of {n}", "which company builds {n}"],
    "Where is": ["where's {n}", "{n} location", "where can i find {n}", "which part of the plant is {n} in"],
    "Which team": ["who services {n}", "{n} maintenance team?", "which crew looks after {n}", "team for {n}"],
    "What is the maximum temperature": ["max temp of {n}?", "{n} temperature limit", "how hot can {n} get"],
    "How often": ["how often does {n} get serviced", "{n} service interval?", "maintenance schedule for {n}"],
    "When was": ["when was {n} put in", "{n} install year?", "what year did {n} go in", "year {n} was installed"],
}
WRONG_FORMAT = ["Q: {q} A:", "{q} Answer in one word.", "ANSWER THIS >> {q}", "{q}\nreply:", "Query - {q}"]
# Share of each style; "clean" prompts already work, "no_context" ones cannot be fixed by rewriting.
STYLES = {"clean": 0.25, "bare": 0.12, "typo": 0.18, "casual": 0.22, "wrong_format": 0.13, "no_context": 0.10}


@dataclass(frozen=True)
class RawPrompt:
    context: str
    request: str
    question: str  # the clean question behind it
    answer: str
    style: str


def entity_of(question: str) -> str:
    return next(w.strip("?") for w in question.split() if "-" in w and w.strip("?")[-1].isdigit())


def typos(text: str, rng: random.Random, rate: float = 0.2, keep: str = "") -> str:
    """Swap, drop or double letters in some words (never inside `keep`, the equipment name)."""
    words = []
    for w in text.split(" "):
        if len(w) > 3 and w.strip("?") != keep and rng.random() < rate:
            i = rng.randrange(1, len(w) - 1)
            w = rng.choice([w[:i - 1] + w[i] + w[i - 1] + w[i + 1:], w[:i] + w[i + 1:], w[:i] + w[i] + w[i:]])
        words.append(w)
    return " ".join(words)


def casual(question: str, rng: random.Random) -> str:
    name = entity_of(question)
    for prefix, phrasings in CASUAL.items():
        if question.startswith(prefix):
            return rng.choice(phrasings).format(n=name)
    return question.lower()


def make_raw(item: Item, rng: random.Random) -> RawPrompt:
    q, doc = item.vars["question"], item.vars["context"]
    style = rng.choices(list(STYLES), weights=list(STYLES.values()))[0]
    name = entity_of(q)
    request = {
        "clean": lambda: f"Question: {q}\nAnswer:",
        "bare": lambda: q,
        "typo": lambda: typos(q if rng.random() < 0.5 else q.lower(), rng, keep=name),
        "casual": lambda: typos(casual(q, rng), rng, 0.1, keep=name),
        "wrong_format": lambda: rng.choice(WRONG_FORMAT).format(q=q),
        "no_context": lambda: f"Question: {q}\nAnswer:",
    }[style]()
    return RawPrompt("" if style == "no_context" else doc, request, q, item.answer, style)


def raw_prompts(items: list[Item], seed: int) -> list[RawPrompt]:
    rng = random.Random(seed)
    return [make_raw(it, rng) for it in items]
