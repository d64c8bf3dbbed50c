"""Measure the long-context targets of issue 4 on the real model and print a table.

    python benchmarks/long_context.py                 # runs the long_context stage, then the 10k-chunk latency
    python benchmarks/long_context.py --skip-stage    # only re-read metrics/long_context.json written by the stage
    python benchmarks/long_context.py --root real --skip-stage --skip-latency --forward
                                                      # the real model (issue 15): its targets at 2x (16k), and
                                                      # the cost of one prefill at 1x and 2x, bf16 vs float32

The retrieval latency target is measured on a separate LanceDB table of 10,000 chunks (fresh-entity
documents, one chunk each), built once and then reused incrementally (data/long_context_bench_index).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def truncation_by_window(root: Path, length: int, trained: int) -> tuple[float, float]:
    """Truncation's passkey accuracy at `length`, (needle beyond the kept window, needle inside it),
    from the stage's per-depth CSV: truncation keeps the last `trained` tokens, so a needle at depth d
    survives when (1 - d) * length < trained."""
    import csv

    beyond, inside = [], []
    with open(root / "plots" / "long_context_passkey.csv") as fh:
        for r in csv.DictReader(fh):
            if r["method"] == "truncation" and int(r["length"]) == length:
                kept = (1 - float(r["depth"])) * length < trained
                (inside if kept else beyond).append(float(r["accuracy"]))
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return mean(beyond), mean(inside)


def latency_10k(root: Path, tokenizer, chunks: int, queries: int, seed: int) -> dict[str, dict[str, float]]:
    """p50/p95 ms per query (query embedding + search) for each search mode over `chunks` chunks."""
    from lmops.data.generate import qa_pairs
    from lmops.embed import embed
    from lmops.longctx.chunking import ChunkConfig
    from lmops.longctx.retrieval import open_or_create
    from lmops.longctx.suite import fresh_kb

    ents, docs = fresh_kb(seed, chunks // 4 + 1, set())
    docs = docs[:chunks]
    index = open_or_create(root / "data" / "long_context_bench_index", f"bench_{chunks}")
    start = time.perf_counter()
    added = index.add_documents(docs, tokenizer, ChunkConfig(128, 32, 256), progress=True)
    print(f"index: {len(index)} chunks ({added} embedded now in {time.perf_counter() - start:.0f} s), "
          f"table version {index.version}", file=sys.stderr)
    embed(["warm up"])
    out = {}
    for mode in ("vector", "fts", "hybrid"):
        index.search("warm up", 5, mode)
        ms, hits = [], 0
        for e in ents[:queries]:
            question, answer = qa_pairs(e)[queries % 7]
            t = time.perf_counter()
            top = index.search(question, 5, mode)
            ms.append(1000 * (time.perf_counter() - t))
            hits += any(h["doc"] == f"{e.name}/profile0" for h in top)
        q = statistics.quantiles(ms, n=20)
        out[mode] = {"p50_ms": round(statistics.median(ms), 2), "p95_ms": round(q[18], 2),
                     "recall@5": round(hits / len(ms), 3), "chunks": len(index)}
    return out


def forward_costs(model_dir: Path, trained: int, threads: int, short: int = 2048) -> list[str]:
    """Seconds per prefill (one row, sdpa, logits_to_keep=1, inference mode): bf16 and float32
    interleaved at `short` tokens (their ratio), then bf16 at the trained context and at 2x."""
    import torch

    from lmops.model.build import load_model

    torch.set_num_threads(threads)
    models = {dt: load_model(model_dir, dtype=getattr(torch, dt), attn_implementation="sdpa")[0]
              for dt in ("bfloat16", "float32")}
    ids = torch.randint(100, 40000, (1, 2 * trained), generator=torch.Generator().manual_seed(0))

    def prefill(m, n: int) -> float:
        with torch.inference_mode():
            t = time.perf_counter()
            m(input_ids=ids[:, :n], logits_to_keep=1, use_cache=True)
            return time.perf_counter() - t

    for m in models.values():
        prefill(m, 128)  # warm up
    times = {dt: [] for dt in models}
    for _ in range(2):  # interleaved, side by side
        for dt, m in models.items():
            times[dt].append(prefill(m, short))
    bf, fp = min(times["bfloat16"]), min(times["float32"])
    out = [f"prefill {short:,} tokens: bfloat16 {bf:.2f} s, float32 {fp:.2f} s (float32 / bfloat16 = {fp / bf:.2f}x)"]
    for n in (trained, 2 * trained):
        out.append(f"prefill {n:,} tokens, bfloat16: {prefill(models['bfloat16'], n):.1f} s")
    return out


def row(name: str, target: str, measured: str, ok: bool) -> str:
    return f"| {name} | {target} | {measured} | {'met' if ok else 'MISSED'} |"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(ROOT), help="project with params.yaml, data/corpus and models/base")
    ap.add_argument("--skip-stage", action="store_true", help="read the stage's metrics instead of running it")
    ap.add_argument("--chunks", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (query embedding is fastest on one)")
    ap.add_argument("--skip-latency", action="store_true", help="skip the 10k-chunk retrieval latency table")
    ap.add_argument("--forward", action="store_true",
                    help="time one prefill at the trained context and at 2x (and bf16 vs float32 at 2k tokens)")
    args = ap.parse_args()

    import torch

    from lmops.model.build import load_model
    from lmops.params import load_params
    from lmops.stages import run_stage
    from lmops.stages.long_context import model_location

    root = Path(args.root)
    p = load_params(root / "params.yaml")
    t0 = time.perf_counter()
    if not args.skip_stage:
        run_stage("long_context", p, root)
    stage_s = time.perf_counter() - t0
    m = json.loads((root / "metrics" / "long_context.json").read_text())
    torch.set_num_threads(args.threads)
    _, tok = load_model(model_location(p, root))
    lat = {} if args.skip_latency else latency_10k(root, tok, args.chunks, args.queries, p.long_context.seed + 1)

    trained = m["trained_context"]
    at = lambda mult: {k: v[str(mult * trained)] for k, v in m["passkey"].items() if str(mult * trained) in v}  # noqa: E731
    two, four, eight = at(2), at(4), at(8)
    best2 = max(two, key=two.get) if two else None
    best4 = max(four, key=four.get) if four else None
    best8 = max(eight, key=eight.get) if eight else None
    kb, r = m["kb_qa"], m["retrieval"]
    best_rag = max(("retrieval", "retrieval_nbce"), key=lambda k: kb.get(k, 0))
    lines = ["| target | wanted | measured | |", "|---|---|---|---|"]
    if two and not four:  # the real model (issue 15): 2x its native context
        n = len(p.long_context.depths) * p.long_context.passkey_items
        lines.append(row("passkey 2x: best method", ">= 90%", f"{two[best2]:.0%} ({best2}, {n} items)",
                         two[best2] >= 0.9))
    if four:
        beyond, inside = truncation_by_window(root, 4 * trained, trained)
        lines.append(row("passkey 4x: truncation near chance (needle beyond its window)",
                         "near 0 (a random word-pair code)",
                         f"{beyond:.0%} where the needle lies beyond the last {trained} tokens; {inside:.0%} where it "
                         f"lies inside (depth 0.9); {four['truncation']:.0%} overall", beyond <= 0.05))
        lines.append(row("passkey 4x: best method", ">= 90%", f"{four[best4]:.0%} ({best4})", four[best4] >= 0.9))
    if eight:
        lines.append(row("passkey 8x: best method", ">= 70%", f"{eight[best8]:.0%} ({best8})", eight[best8] >= 0.7))
    lines.append(row("retrieval recall@5 (KB-QA)", ">= 0.90", f"{r['recall@5']:.2f}", r["recall@5"] >= 0.9))
    gain = kb[best_rag] - kb["truncation"]
    lines.append(row("retrieval + model vs truncation, KB-QA EM", ">= +30 points",
                     f"{kb[best_rag]:.0%} ({best_rag}) vs {kb['truncation']:.0%}: {100 * gain:+.0f}", gain >= 0.3))
    if "nbce" in kb:
        lines.append(row("NBCE vs truncation, multi-doc QA EM", "NBCE higher",
                         f"{kb['nbce']:.0%} vs {kb['truncation']:.0%}", kb["nbce"] > kb["truncation"]))
    mode = p.long_context.retrieval.mode
    if lat:
        lines.append(row(f"retrieval p50 over {lat[mode]['chunks']:,} chunks ({mode})", "< 50 ms",
                         f"{lat[mode]['p50_ms']:.1f} ms (p95 {lat[mode]['p95_ms']:.1f})", lat[mode]["p50_ms"] < 50))
    print(f"\nlong-context benchmark (trained context {trained} tokens; stage "
          f"{'skipped' if args.skip_stage else f'ran in {stage_s:.0f} s'})\n")
    print("\n".join(lines))
    if two and "nbce_ref" in two:
        print(f"\nNBCE, reference rule vs simplified, same chunks, passkey 1x / 2x: nbce_ref "
              f"{at(1)['nbce_ref']:.0%} / {two['nbce_ref']:.0%}, nbce {at(1)['nbce']:.0%} / {two['nbce']:.0%}")
    if lat:
        print("\nretrieval latency by mode over the 10k-chunk table (query embedding + search, "
              f"{args.threads} thread):")
    for k, v in lat.items():
        print(f"  {k:<7} p50 {v['p50_ms']:6.1f} ms  p95 {v['p95_ms']:6.1f} ms  recall@5 {v['recall@5']:.2f}")
    print("\npasskey accuracy by length (x trained context):")
    for k, v in m["passkey"].items():
        print(f"  {k:<16} " + "  ".join(f"{int(L) // trained}x {a:4.0%}" for L, a in v.items()) +
              (f"   KB-QA {kb[k]:.0%}" if k in kb else "   KB-QA not run"))
    if args.forward:
        print(f"\nforward passes ({args.threads} threads, load average {os.getloadavg()[0]:.1f}):")
        for line in forward_costs(model_location(p, root), trained, args.threads):
            print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
