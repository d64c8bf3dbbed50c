"""Measure issue 5's targets on a real model and print them as a table.

    python benchmarks/prompts.py --model models/pretrained      # default: params.yaml's prompts.model

Runs the `prompts` stage's two optimizers with the params.yaml defaults (the registry goes to a
temporary file, so the project's registry is untouched) and checks:
  1. the loop's best prompt beats the seed on test by >= 10 points;
  2. routed beats direct on held-out raw prompts by >= 10 points;
  3. routed >= always-refine while refining fewer prompts;
  4. no test item is used for selection (the loop's split reads during search).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".", help="project with params.yaml and data/corpus")
    ap.add_argument("--model", help="model directory (default: params.yaml prompts.model)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from lmops.data import Corpus
    from lmops.model.build import count_params, load_model
    from lmops.params import load_params
    from lmops.prompts.backends import make_backend
    from lmops.prompts.optimize import run_loop, run_router
    from lmops.prompts.registry import PromptRegistry
    from lmops.prompts.templates import load_library

    torch.set_num_threads(args.threads)
    root = Path(args.root)
    pp = load_params(root / "params.yaml").prompts
    model_dir = Path(args.model or root / pp.model)
    model, tokenizer = load_model(model_dir)
    library = load_library(root / pp.templates)
    corpus = Corpus.load(root / "data" / "corpus")
    backend = make_backend(pp.backend, (model, tokenizer))
    registry = PromptRegistry.open(Path(tempfile.mkdtemp()) / "registry.json")
    t0 = time.perf_counter()
    loop = run_loop(pp, backend, corpus, library, registry)
    t1 = time.perf_counter()
    router = run_router(pp, model, tokenizer, backend, corpus, library)
    t2 = time.perf_counter()

    res = loop["result"]
    gain = loop["best_test"].score - loop["seed_test"].score
    lift = router["routed_test"] - router["direct_test"]
    rows = [
        ("loop: best - seed on test >= +0.10", f"{loop['seed_test'].score:.3f} -> {loop['best_test'].score:.3f} ({gain:+.3f})", gain >= 0.10),
        ("router: routed - direct >= +0.10", f"{router['direct_test']:.3f} -> {router['routed_test']:.3f} ({lift:+.3f})", lift >= 0.10),
        ("router: routed >= always-refine", f"{router['routed_test']:.3f} vs {router['always_refine_test']:.3f}",
         router["routed_test"] >= router["always_refine_test"]),
        ("router: refines fewer prompts", f"routed share {router['routed_share']:.3f}", router["routed_share"] < 1.0),
        ("no test item used for selection", f"loop search read {loop['search_reads']}", "test" not in loop["search_reads"]),
    ]
    print(f"\nmodel {model_dir} ({count_params(model):,} params), backend {pp.backend.type}; "
          f"loop {t1 - t0:.0f}s, router {t2 - t1:.0f}s\n")
    print(f"| {'target':<38} | {'measured':<44} | ok |\n|{'-' * 40}|{'-' * 46}|----|")
    for name, value, ok in rows:
        print(f"| {name:<38} | {value:<44} | {'yes' if ok else 'NO '} |")
    print(f"\nloop: best dev {res.best_dev:.3f} (seed dev {res.seed_dev:.3f}), {res.rounds} rounds, "
          f"{res.candidates_scored} candidates; best spec {res.best.to_dict()}")
    print(f"      test answer log-lik seed {loop['seed_test'].loglik} -> best {loop['best_test'].loglik}")
    print(f"router: classifier ROC-AUC {router['classifier_auc']}, threshold {router['threshold']}, "
          f"train positives {router['train_positive_share']}")
    for style, v in router["by_style"].items():
        print(f"      {style:<13} direct {v['direct']:.3f}  refined {v['refined']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
