"""The retraining recipe, measured offline: `python benchmarks/retrain.py [--root .] [--champion DIR]`.

What the `lmops-retrain` flow does after a drift event, without the server or Prefect: the drifted
window's prompts (the simulator's stream with the scenario's topic shift, from its onset), the
snapshot texts, the LoRA fine-tune (params' `drift.retrain`), the quantized variant, and the gate's
evaluations of champion and challenger. Prints a table and the seconds of each step.

Target (issues 6, 15): after retraining, QA on held-out questions of the drifted topic improves by at
least 20 points over the champion, the old test split within `drift.retrain.tolerance`. The held-out
questions (`fresh.gate_split`, `drift.retrain.gate_questions` per fresh entity) are in no training text
and not in the knowledge index; the gate reads `drift.retrain.gate_metric` on them:
`new_qa_heldout_rag` open-book through the knowledge index (the champion on its version before the
drifted topic's documents were added, the challenger on the version after), `new_qa_heldout`
closed-book. `new_qa` (the old gate: trained and untrained questions mixed) is reported beside them.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def drifted_logs(p, corpus, n: int):
    """The prompts of the first drifted window of the scenario flow (as the monitor logs them)."""
    import pandas as pd

    from lmops.serve.simulate import Traffic

    sc = p.drift.scenario
    onset = sc.reference_requests + sc.clean_windows * sc.window_requests
    sim = p.simulate.model_copy(update={"seed": sc.seed, "topic": p.simulate.topic.model_copy(
        update={"share": sc.topic_shift, "onset": onset})})
    traffic = Traffic(sim, corpus)
    reqs = [traffic.request(i) for i in range(onset, onset + n)]
    # /v1/chat/completions logs the last message; /v1/completions the prompt
    return pd.DataFrame({"prompt": [r.body.get("prompt") or r.body["messages"][-1]["content"] for r in reqs]})


def _index_only(p, index, held, model_dir: Path) -> float:
    """The champion's weights with the challenger's index: what the index update alone buys."""
    from lmops.model.build import load_model
    from lmops.retrain.gate import open_book_qa
    from lmops.retrain.index import Retriever

    model, tokenizer = load_model(model_dir)
    return open_book_qa(model, tokenizer, held, Retriever(index.path, index.after, p).context)


def measure(p, root: Path, champion: Path, out: Path) -> dict:
    """Snapshot -> fine-tune -> quantize -> evaluate both, as `flows/retrain.py` runs them."""
    import torch

    from lmops.data import Corpus
    from lmops.model.build import load_model, save_model
    from lmops.model.train import training_texts
    from lmops.retrain.dataset import retrain_texts
    from lmops.retrain.finetune import lora_finetune, mix_replay
    from lmops.retrain.fresh import fresh_documents, fresh_qa, gate_split
    from lmops.retrain.gate import evaluate_candidate
    from lmops.retrain.index import Retriever, update
    from lmops.retrain.run import quantize_model

    rp = p.drift.retrain
    torch.set_num_threads(rp.threads)
    corpus = Corpus.load(root / "data/corpus")
    qa, docs = fresh_qa(p.simulate), fresh_documents(p.simulate)
    _, held = gate_split(qa, rp.gate_questions, rp.seed)
    logs = drifted_logs(p, corpus, p.drift.scenario.window_requests)
    new, prov = retrain_texts(logs, docs, qa, rp.seed, rp.faq_per_entity, rp.qa_repeats,
                              tuple(rp.document_kinds), heldout={r["question"] for r in held})
    texts = mix_replay(new, training_texts(corpus, rp.seed), rp.replay_share, rp.seed)
    trained = set(prov["faq_questions"]) | set(prov["asked_questions"])
    seconds = {}
    model, tokenizer = load_model(champion)
    t = time.perf_counter()
    index = update(p, out, docs, tokenizer, corpus.documents)  # corpus documents, then the new topic's
    seconds["index"] = round(time.perf_counter() - t, 1)

    def evaluate(model, tokenizer, label, version):
        t = time.perf_counter()
        m = evaluate_candidate(model, tokenizer, corpus, qa, trained, rp.eval_items, gate_qa=held,
                               retrieve=Retriever(index.path, version, p).context)
        seconds[f"evaluate {label}"] = round(time.perf_counter() - t, 1)
        return m

    before = evaluate(model, tokenizer, "champion", index.before)
    t = time.perf_counter()
    merged, result = lora_finetune(model, tokenizer, texts, rp)
    seconds["fine-tune"] = round(time.perf_counter() - t, 1)
    after = evaluate(merged, tokenizer, "challenger", index.after)
    full = save_model(merged, tokenizer, out / "challenger", {"steps": rp.steps})
    rows = {"champion": before, "challenger (full)": after}
    if rp.quantize != "none":
        t = time.perf_counter()
        qdir = quantize_model(p, root, full, out / f"challenger-{rp.quantize}")
        seconds[f"quantize {rp.quantize}"] = round(time.perf_counter() - t, 1)
        from lmops.quant.artifact import load_variant

        qmodel, qtok, _ = load_variant(qdir)
        rows[f"challenger ({rp.quantize})"] = evaluate(qmodel, qtok, rp.quantize, index.after)
    return {"rows": rows, "seconds": seconds, "texts": len(texts), "new_texts": len(new),
            "asked": len(prov["asked_questions"]), "faq": len(prov["faq_questions"]),
            "trained_in_new_qa": sum(r["question"] in trained for r in qa[:rp.eval_items * 3]),
            "index": index.as_dict(), "gate_items": len(held[:rp.eval_items]),
            "champion_index_only": _index_only(p, index, held[:rp.eval_items], model_dir=champion),
            "final_loss": result.losses[-1][1], "train_tokens": result.tokens}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".")
    ap.add_argument("--champion", default="models/base", help="the model to retrain (default: models/base)")
    ap.add_argument("--threads", type=int, help="torch threads (default: drift.retrain.threads)")
    ap.add_argument("--steps", type=int, help="LoRA steps (default: drift.retrain.steps)")
    ap.add_argument("--eval-items", type=int, help="items per evaluation (default: drift.retrain.eval_items)")
    ap.add_argument("--quantize", help="the served variant (default: drift.retrain.quantize; 'none' skips it)")
    args = ap.parse_args()
    from lmops.params import load_params

    root = Path(args.root).resolve()
    p = load_params(root / "params.yaml")
    override = {k: v for k, v in (("threads", args.threads), ("steps", args.steps), ("eval_items", args.eval_items),
                                  ("quantize", args.quantize)) if v}
    if override:
        p = p.model_copy(update={"drift": p.drift.model_copy(update={
            "retrain": p.drift.retrain.model_copy(update=override)})})
    with tempfile.TemporaryDirectory() as tmp:
        res = measure(p, root, (root / args.champion).resolve(), Path(tmp))
    rp = p.drift.retrain
    print(f"recipe: {rp.steps} steps x {rp.batch_size} rows x {rp.context} tokens, lr {rp.lr}, rank {rp.lora_r}, "
          f"replay {rp.replay_share}, faq/entity {rp.faq_per_entity}, qa x{rp.qa_repeats}, documents {rp.document_kinds}; {res['new_texts']} new texts "
          f"({res['faq']} FAQ + {res['asked']} asked questions), {res['texts']} with replay; "
          f"{res['trained_in_new_qa']}/{rp.eval_items * 3} new_qa questions are in the training texts; "
          f"final loss {res['final_loss']}")
    ix = res["index"]
    print(f"knowledge index: version {ix['before']} -> {ix['after']} (+{ix['added_documents']} documents, "
          f"{ix['added_chunks']} chunks; {ix['chunks']} in all); the gate reads {rp.gate_metric} on "
          f"{res['gate_items']} held-out questions ({rp.gate_questions} per fresh entity, never trained, never indexed)")
    keys = list(res["rows"]["champion"])
    print("| model | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 1))
    for name, m in res["rows"].items():
        print(f"| {name} | " + " | ".join(str(m[k]) for k in keys) + " |")
    base = res["rows"]["champion"]
    print(f"champion with the updated index (the index alone, no fine-tune): new_qa_heldout_rag "
          f"{res['champion_index_only']}")
    for name, m in list(res["rows"].items())[1:]:
        key = rp.gate_metric
        gain = round(100 * (m[key] - base[key]), 1)
        print(f"{name}: {key} (held out) {gain:+} points (target >= +20: {'met' if gain >= 20 else 'NOT met'}); "
              f"closed-book new_qa_heldout {100 * (m['new_qa_heldout'] - base['new_qa_heldout']):+.1f}, "
              f"old mixed new_qa {100 * (m['new_qa'] - base['new_qa']):+.1f}; "
              f"old_test_qa {100 * (m['old_test_qa'] - base['old_test_qa']):+.1f} points "
              f"(tolerance {100 * rp.tolerance:.0f})")
    print("seconds: " + ", ".join(f"{k} {v}" for k, v in res["seconds"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
