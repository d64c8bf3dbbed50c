"""Realistic raw user prompts: what people actually type, for knowledge-base QA and for incident
routing. Each raw prompt keeps the pasted document (`context`, empty when there is none or the user
forgot it) and the message (`request`), and remembers the clean text it stands for (`target`, the
refiner's training target): the question for QA, a tidy incident report for routing."""
from __future__ import annotations

import random
import re
from collections.abc import Callable
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
    target: str  # the clean text behind it: what the refiner should write
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


def make_kb_raw(item: Item, rng: random.Random) -> RawPrompt:
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


INCIDENT_CASUAL = ["the {kind} {name} has {a}, also {b}. what's wrong?", "{name}: {a} + {b}. which category?",
                   "hey, {a} and {b} on {name} ({kind}), pls route", "{kind} {name} - {a}, {b}",
                   "got {a} and {b} at the {kind} {name}, who handles this"]
INCIDENT_WRONG = ["Which category is this incident? {r}", "REPORT >> {r} << type?", "Classify: {r}", "{r}\nwhat kind of problem"]
INCIDENT_STYLES = {"clean": 0.25, "bare": 0.15, "typo": 0.18, "casual": 0.2, "wrong_format": 0.14, "no_context": 0.08}
_INCIDENT = re.compile(r"on the (\w+) (\S+)\. Operators observed (.+?) and (.+?)\. The ")


def incident_target(kind: str, name: str, a: str, b: str) -> str:
    """The tidy report the routing model reads best (its training format, with the ids blanked)."""
    return f"Incident report INC-0000 on the {kind} {name}. Operators observed {a} and {b}. The team checked it."


def make_incident_raw(item: Item, rng: random.Random) -> RawPrompt:
    report = item.vars["report"]
    kind, name, a, b = _INCIDENT.search(report).groups()
    style = rng.choices(list(INCIDENT_STYLES), weights=list(INCIDENT_STYLES.values()))[0]
    request = {
        "clean": lambda: f"{report}\nCategory:",
        "bare": lambda: report,
        "typo": lambda: typos(report, rng, 0.15, keep=name) + ("\nCategory:" if rng.random() < 0.5 else ""),
        "casual": lambda: typos(rng.choice(INCIDENT_CASUAL).format(kind=kind, name=name, a=a, b=b), rng, 0.1, keep=name),
        "wrong_format": lambda: rng.choice(INCIDENT_WRONG).format(r=report),
        "no_context": lambda: rng.choice(["which category is this incident? see attached", f"problem with {name}, route it"]),
    }[style]()
    return RawPrompt("", request, incident_target(kind, name, a, b), item.answer, style)


RAW_MAKERS: dict[str, Callable[[Item, random.Random], RawPrompt]] = {"kb_qa": make_kb_raw,
                                                                     "incident_category": make_incident_raw}
# How a refined text fills the task's production template.
EFFECTIVE_VARS: dict[str, Callable[[RawPrompt, str], dict]] = {
    "kb_qa": lambda raw, text: {"context": raw.context, "question": text},
    "incident_category": lambda raw, text: {"report": text},
}


def raw_prompts(items: list[Item], seed: int, task: str = "kb_qa") -> list[RawPrompt]:
    rng = random.Random(seed)
    return [RAW_MAKERS[task](it, rng) for it in items]
