"""What the real profile's LoRA recipe buys: the imported model and its fine-tune (real/models/base, from
`lmops --root real stage train`) scored by the evaluate stage's own code (`evaluate_base`, the English
perplexity) on the same held-out items, with real/params.yaml's `evaluate` settings. Prints a table and
writes real/metrics/lora_gain.json.

    python benchmarks/real_lora_gain.py                       # imported model, then the fine-tune
    python benchmarks/real_lora_gain.py --models models/smollm2-135m-instruct
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "real"
DEFAULT = [ROOT / "models" / "smollm2-135m-instruct", PROFILE / "models" / "base"]
KEYS = ["kb_qa_exact_match", "recall_exact_match", "val_perplexity", "english_perplexity"]


def evaluate(model_dir: Path, p) -> dict:
    import torch

    from lmops.data import Corpus
    from lmops.layout import CORPUS
    from lmops.model.build import load_model, resolve_device
    from lmops.model.evaluate import english_perplexity, evaluate_base

    e = p.evaluate
    torch.set_num_threads(e.threads)
    start = time.perf_counter()
    model, tok = load_model(model_dir, device=resolve_device(p.device))
    m = evaluate_base(model, tok, Corpus.load(PROFILE / CORPUS), context=p.train.context, ppl_tokens=e.ppl_tokens,
                      max_items=e.max_items, max_new_tokens=e.max_new_tokens, chat=e.chat)
    if e.english_text:
        m["english_perplexity"] = english_perplexity(model, tok, PROFILE / e.english_text, p.train.context,
                                                     e.ppl_tokens)
    return {**m, "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str]) -> int:
    from lmops.params import load_params

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", type=Path, default=DEFAULT, help="model directories to score")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = load_params(PROFILE / "params.yaml")
    load = os.getloadavg()[0]
    rows = {}
    for d in args.models:
        rows[str(d.resolve().relative_to(ROOT)) if d.resolve().is_relative_to(ROOT) else str(d)] = evaluate(d, p)
    print(f"\n{p.evaluate.max_items} test items per task, {p.evaluate.ppl_tokens} perplexity tokens, "
          f"{p.evaluate.threads} threads, load average {load:.1f} at the start\n")
    print("| model | " + " | ".join(KEYS) + " | wall s |\n|---|" + "---:|" * (len(KEYS) + 1))
    for name, m in rows.items():
        print(f"| {name} | " + " | ".join(str(m.get(k)) for k in KEYS) + f" | {m['seconds']} |")
    out = PROFILE / "metrics" / "lora_gain.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"load_average": round(load, 2), "models": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
