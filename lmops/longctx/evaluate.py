"""Scoring the methods on the suite: passkey accuracy per (length, depth), knowledge-base QA exact
match, retrieval recall@k / MRR / latency, and perplexity by position."""
from __future__ import annotations

import math
import time
from collections import defaultdict

from lmops.longctx.methods.base import Method
from lmops.longctx.suite import Item
from lmops.model.evaluate import exact_match


def run_method(method: Method, items: list[Item]) -> tuple[list[str], float]:
    """Answers and the mean wall-clock milliseconds per query."""
    start = time.perf_counter()
    answers = method.answer(items)
    if len(answers) != len(items):
        raise ValueError(f"method {method.name!r} gave {len(answers)} answers for {len(items)} items")
    return answers, 1000 * (time.perf_counter() - start) / max(1, len(items))


def score_methods(methods: dict[str, Method], items: list[Item], progress: bool = True, per_call: int = 0,
                  desc: str = "items") -> tuple[dict[str, list[bool]], dict[str, float]]:
    """Per-item correctness and mean ms per query, for every (prepared) method on the same items.
    `per_call` > 0 hands each method that many items at a time, with a progress line per call."""
    import sys

    from tqdm.auto import tqdm

    from lmops.progress import report

    hits, ms = {}, {}
    step = per_call if per_call and per_call < len(items) else max(1, len(items))
    for i, (name, method) in enumerate(methods.items()):
        report("long-context methods", i, len(methods))
        answers, total = [], 0.0
        for j in tqdm(range(0, len(items), step), desc=f"{desc} {name}", disable=not progress or step >= len(items),
                      leave=False):
            got, per = run_method(method, items[j:j + step])
            answers += got
            total += per * len(got)
        ms[name] = total / max(1, len(items))
        hits[name] = [exact_match([a], [it.answer]) == 1.0 for a, it in zip(answers, items)]
        if progress:
            print(f"long_context {desc} {name}: {sum(hits[name])}/{len(items)} right, {ms[name] / 1000:.1f} s/item; "
                  f"answers {[a[:24] for a in answers[:3]]}", file=sys.stderr, flush=True)
    report("long-context methods", len(methods), len(methods))
    return hits, ms


def passkey_grid(items: list[Item], hits: dict[str, list[bool]]) -> dict[str, dict[tuple[int, float], float]]:
    """{method: {(length, depth): accuracy}}."""
    out = {}
    for name, h in hits.items():
        cells = defaultdict(list)
        for it, ok in zip(items, h):
            cells[(it.length, it.depth)].append(ok)
        out[name] = {k: sum(v) / len(v) for k, v in sorted(cells.items())}
    return out


def by_length(grid: dict[tuple[int, float], float]) -> dict[int, float]:
    """Mean accuracy over depths, per length (every cell has the same number of items)."""
    cells = defaultdict(list)
    for (length, _), acc in grid.items():
        cells[length].append(acc)
    return {L: round(sum(v) / len(v), 4) for L, v in sorted(cells.items())}


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def retrieval_metrics(index, items: list[Item], mode: str, depth: int = 10, rrf_k: int = 60) -> dict:
    """recall@1, recall@5 and MRR of the gold document's chunk holding the answer, and search latency
    (query embedding + search) per query."""
    ranks, latencies = [], []
    for it in items:
        start = time.perf_counter()
        hits = index.search(it.question, depth, mode, rrf_k=rrf_k)
        latencies.append(1000 * (time.perf_counter() - start))
        gold = it.meta["gold_doc"]
        rank = next((i for i, h in enumerate(hits, 1) if h["doc"] == gold and it.answer in h["text"]), None)
        ranks.append(rank)
    n = max(1, len(items))
    return {"recall@1": round(sum(r == 1 for r in ranks) / n, 4),
            "recall@5": round(sum(r is not None and r <= 5 for r in ranks) / n, 4),
            "mrr": round(sum(1 / r for r in ranks if r) / n, 4),
            "p50_ms": round(_percentile(latencies, 0.5), 2), "p95_ms": round(_percentile(latencies, 0.95), 2),
            "chunks": len(index), "table_version": index.version}


def token_nll(model, ids: list[int], window: int | None = None) -> list[float]:
    """Per-token negative log-likelihood of ids[1:]. `window=None` scores the whole sequence in one
    pass; otherwise each token sees at most `window` tokens (sliding, stride window/2): truncation."""
    import torch

    def nll(seq: list[int]) -> list[float]:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([seq], device=getattr(model, "device", "cpu"))).logits[0, :-1].float()
        return torch.nn.functional.cross_entropy(logits, torch.tensor(seq[1:], device=logits.device),
                                                 reduction="none").tolist()

    if window is None or len(ids) <= window:
        return nll(ids)
    out = nll(ids[:window])
    stride = window // 2
    for end in range(window + stride, len(ids) + stride, stride):
        end = min(end, len(ids))
        scored = len(out) + 1  # tokens already scored, counting the first (unscored) one
        out += nll(ids[max(0, end - window):end])[-(end - scored):]
        if end == len(ids):
            break
    return out


def ppl_by_position(nlls: list[list[float]], bucket: int) -> list[float]:
    """Perplexity per position bucket, pooled over sequences."""
    sums, counts = defaultdict(float), defaultdict(int)
    for seq in nlls:
        for pos, v in enumerate(seq, 1):
            sums[pos // bucket] += v
            counts[pos // bucket] += 1
    return [round(math.exp(sums[b] / counts[b]), 3) for b in sorted(sums)]
