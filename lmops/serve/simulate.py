"""`lmops simulate`: realistic traffic for a running server, with drift switched on at an onset.

In-distribution traffic is what the plant's users ask: knowledge-base questions about known
equipment in the corpus' question/answer format (open book with the profile document, or closed
book) and incident classification prompts. Three drifts, each with a share and an onset
(a request index, or seconds after the start):
- `topic`: the same kinds of request about equipment of `FRESH_KINDS` the model never saw;
- `style`: known equipment, asked the way people type in a chat box;
- `ood`:   out-of-domain text (kitchen recipes) with a question about it.
Each request's kind is sent as the OpenAI `user` field (`sim:<kind>`), so the production log
carries the ground truth that a drift detector is scored against.
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lmops.data.generate import fresh_entities, profile_doc, qa_pairs, qa_text
from lmops.params import SimulateParams

DRIFTS = ("topic", "style", "ood")
INCIDENT_QUESTION = "Which category is this incident?"
STYLE = ["hey what pressure does {name} run at??", "who built {name}? need it for a parts order",
         "where is {name} again", "which crew looks after {name} these days", "how hot can {name} get before it trips",
         "how often do we service {name}, is it overdue?", "what year did {name} go in"]
STYLE_NOISE = ["", " pls", " thx", "!!", " asap", " :)", " (asking for the night shift)"]
OOD_QUESTIONS = ["How long should it simmer?", "What goes in first?", "How much butter is needed?",
                 "Can I use rice instead?"]


@dataclass
class SimRequest:
    index: int
    kind: str  # "normal" or a drift name
    endpoint: str
    body: dict


@dataclass
class Pool:
    """What one population of users asks about: QA rows and incident reports."""
    qa: list[dict]  # {"doc", "question"}
    incidents: list[dict]  # {"text"}
    entities: list[dict]  # {"name"}


def corpus_pool(corpus) -> Pool:
    """Known equipment: the entities the model was trained on."""
    return Pool(qa=corpus.split(corpus.qa, "train"), incidents=corpus.split(corpus.incidents, "train"),
                entities=corpus.split(corpus.entities, "train"))


def fresh_pool(seed: int, count: int) -> Pool:
    """Equipment of kinds the model never saw, with their documents (a new seed: new names too)."""
    ents = fresh_entities(seed, count)
    qa = [{"doc": profile_doc(e), "question": q} for e in ents for q, _ in qa_pairs(e)]
    incidents = [inc for e in ents for inc in e.incidents]
    return Pool(qa=qa, incidents=incidents, entities=[{"name": e.name} for e in ents])


class Traffic:
    """Deterministic request stream: request `i` depends only on the seed, `i` and the active drifts."""

    def __init__(self, sim: SimulateParams, corpus):
        self.sim = sim
        self.known = corpus_pool(corpus)
        self.fresh = fresh_pool(sim.fresh_seed, sim.fresh_entities)
        # Three sentences of a recipe: as long as a profile document, so length alone is no tell.
        self.ood = [" ".join(r["text"].split(". ")[:3]).rstrip(".") + "." for r in corpus.ood]

    def kind(self, i: int, elapsed: float | None = None) -> str:
        """Partition [0, 1) among the drifts active at (i, elapsed); the rest is normal traffic."""
        u, edge = random.Random(self.sim.seed * 1_000_003 + i).random(), 0.0
        for name in DRIFTS:
            d = getattr(self.sim, name)
            started = (elapsed is not None and elapsed >= d.onset_seconds) if d.onset_seconds is not None \
                else i >= d.onset
            if started:
                edge += d.share
                if u < edge:
                    return name
        return "normal"

    def request(self, i: int, elapsed: float | None = None) -> SimRequest:
        kind = self.kind(i, elapsed)
        rng = random.Random(self.sim.seed * 7_919 + i * 31 + 1)
        body = {"model": None, "max_tokens": self.sim.max_tokens, "temperature": 0.0, "user": f"sim:{kind}"}
        if kind == "style":
            name = rng.choice(self.known.entities)["name"]
            text = rng.choice(STYLE).format(name=name) + rng.choice(STYLE_NOISE)
            body["messages"] = [{"role": "user", "content": text.lower() if rng.random() < 0.5 else text}]
            return SimRequest(i, kind, "/v1/chat/completions", body)
        if kind == "ood":
            body["prompt"] = rng.choice(self.ood) + qa_text(rng.choice(OOD_QUESTIONS))
        else:
            body["prompt"] = self._domain_prompt(self.fresh if kind == "topic" else self.known, rng)
        body["stop"] = ["\n"]
        return SimRequest(i, kind, "/v1/completions", body)

    def _domain_prompt(self, pool: Pool, rng: random.Random) -> str:
        if rng.random() < self.sim.incident_share:
            return rng.choice(pool.incidents)["text"] + qa_text(INCIDENT_QUESTION)
        row = rng.choice(pool.qa)
        # Open book (the document, then the question) or closed book, as in evaluation.
        return (row["doc"] if rng.random() < self.sim.open_book_share else "") + qa_text(row["question"])


@dataclass
class SimResult:
    sent: Counter = field(default_factory=Counter)  # by kind
    failed: Counter = field(default_factory=Counter)  # by kind
    errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def percentile(self, q: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    def table(self) -> str:
        rows = [f"| {k} | {self.sent[k]} | {self.failed[k]} |" for k in ("normal", *DRIFTS) if self.sent[k]]
        total = sum(self.sent.values())
        return ("| kind | sent | failed |\n|---|---|---|\n" + "\n".join(rows) +
                f"\n\n{total} requests in {self.seconds:.1f} s ({total / max(self.seconds, 1e-9):.1f} req/s), "
                f"latency p50 {self.percentile(0.5):.0f} ms, p99 {self.percentile(0.99):.0f} ms, "
                f"{sum(self.failed.values())} failed" + (f"\nfirst error: {self.errors[0]}" if self.errors else ""))


def send(traffic: Traffic, url: str, requests: int, concurrency: int, start_index: int = 0,
         timeout: float = 120.0) -> SimResult:
    """Send requests `start_index ..` from `concurrency` client threads; count failures, never raise."""
    import httpx
    from tqdm.auto import tqdm

    result, lock = SimResult(), threading.Lock()
    counter = iter(range(start_index, start_index + requests))
    t0 = time.monotonic()
    bar = tqdm(total=requests, desc="simulate", leave=False)

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=timeout) as client:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                req = traffic.request(i, time.monotonic() - t0)
                req.body = {k: v for k, v in req.body.items() if v is not None}
                sent = time.monotonic()
                try:
                    r = client.post(req.endpoint, json=req.body)
                    ok, err = r.status_code == 200, f"{r.status_code}: {r.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, err = False, repr(exc)
                with lock:
                    result.sent[req.kind] += 1
                    result.latencies_ms.append((time.monotonic() - sent) * 1000)
                    if not ok:
                        result.failed[req.kind] += 1
                        result.errors.append(err)
                    bar.update()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bar.close()
    result.seconds = time.monotonic() - t0
    return result


def simulate(sim: SimulateParams, root: Path = Path("."), corpus=None) -> SimResult:
    from lmops.data import Corpus

    corpus = corpus or Corpus.load(Path(root) / "data" / "corpus")
    return send(Traffic(sim, corpus), sim.url, sim.requests, sim.concurrency)
