"""Accuracy of int4 weight quantization on one model: held-out perplexity of every variant on the same
tokens, by lmops' protocol (`lmops.quant.kv.window_perplexity`: non-overlapping windows, no KV
quantization), and the time each variant took to build. Prints a table (and writes --out JSON).

    PYTHONPATH=. python benchmarks/int4_accuracy.py                  # SmolLM2-135M-Instruct, 1 thread
    PYTHONPATH=. python benchmarks/int4_accuracy.py --variants bf16 rtn_g64 gptq_g64

Variants: bf16; rtn_g64/rtn_g32 (lmops' int4 RTN: per-group scale and fractional zero point, the
embedding and LM head int8); gptq_g64/gptq_g32 (sequential GPTQ, same grid); nf4 (bitsandbytes NF4,
its fixed 64-weight blocks); qat_g64 (fine-tune with int4 fake quantization, then the trained grid)
and ft_g64 (its control: the same fine-tune in float, then RTN).

Honesty note printed with the table: SmolLM2-135M-Instruct here was imported from a Q4_1 GGUF
(asymmetric, blocks of 32, float min), so its weights already lie on a 4-bit grid of 32-column groups;
group-32 results are therefore not representative of int4 on an unquantized checkpoint.
"""
from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALL = ["bf16", "rtn_g64", "rtn_g32", "gptq_g64", "gptq_g32", "nf4", "qat_g64", "ft_g64"]
NOTE = ("note: the model was imported from a Q4_1 GGUF (asymmetric 4-bit, blocks of 32, float min): its weights "
        "already sit on a group-32 grid, so group-32 int4 figures flatter int4; group 64 is the fairer test.")


def paragraphs(path: Path) -> list[str]:
    return [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "smollm2-135m-instruct")
    ap.add_argument("--heldout", type=Path, default=ROOT / "data" / "english" / "heldout.txt")
    ap.add_argument("--calibration", type=Path, default=ROOT / "data" / "english" / "calibration.txt")
    ap.add_argument("--variants", nargs="+", default=ALL, choices=ALL)
    ap.add_argument("--tokens", type=int, default=4096, help="held-out tokens scored (fewer if the text is shorter)")
    ap.add_argument("--max-length", type=int, default=256, help="perplexity window and calibration/training context")
    ap.add_argument("--calib-sequences", type=int, default=16, help="calibration windows (GPTQ; QAT's training data)")
    ap.add_argument("--no-act-order", dest="act_order", action="store_false", help="GPTQ without act-order")
    ap.add_argument("--damp", type=float, default=0.01, help="GPTQ Hessian damping (share of the mean diagonal)")
    ap.add_argument("--qat-steps", type=int, default=30)
    ap.add_argument("--qat-lr", type=float, default=2e-5)
    ap.add_argument("--qat-batch", type=int, default=4)
    ap.add_argument("--qat-objective", choices=["distill", "lm"], default="distill")
    ap.add_argument("--qat-trainable", choices=["linears", "all"], default="linears")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)

    import torch

    from lmops.model.build import load_model
    from lmops.model.evaluate import token_stream
    from lmops.quant.api import quantize_
    from lmops.quant.build import BuildContext
    from lmops.quant.kv import window_perplexity
    from lmops.quant.methods.gptq import GPTQConfig
    from lmops.quant.methods.int4 import Int4WeightConfig
    from lmops.quant.methods.qat import QATConfig
    from lmops.quant.registry import method_for

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    base, tokenizer = load_model(args.model)
    base.eval()
    test = token_stream(tokenizer, paragraphs(args.heldout), args.tokens)
    calib_texts = paragraphs(args.calibration)
    stream = token_stream(tokenizer, calib_texts, args.calib_sequences * args.max_length)
    calib = [torch.tensor([stream[i:i + args.max_length]]) for i in range(0, len(stream), args.max_length)]
    ctx = BuildContext(base=args.model, calib=calib, train_texts=calib_texts, context=args.max_length,
                       threads=args.threads, seed=0)
    print(f"held-out: {len(test)} tokens of {args.heldout.name}; calibration: {len(calib)} x <= {args.max_length} "
          f"tokens of {args.calibration.name}; threads {args.threads}; load average {os.getloadavg()[0]:.2f}", flush=True)

    def build(name: str):
        if name == "bf16":
            return copy.deepcopy(base).to(torch.bfloat16)
        if name.startswith(("rtn_g", "gptq_g")):
            g = int(name.split("_g")[1])
            cfg = Int4WeightConfig(group_size=g) if name.startswith("rtn") else \
                GPTQConfig(group_size=g, damp=args.damp, act_order=args.act_order)
            return quantize_(copy.deepcopy(base), cfg, calib)
        if name == "nf4":
            from lmops.quant.methods.bnb import BnbConfig
            return method_for(BnbConfig()).build(BnbConfig(mode="nf4"), ctx)[0]
        cfg = QATConfig(group_size=int(name.split("_g")[1]), steps=args.qat_steps, lr=args.qat_lr,
                        batch_size=args.qat_batch, fake_quant=name.startswith("qat"), objective=args.qat_objective,
                        data="calibration", trainable=args.qat_trainable)
        return method_for(cfg).build(cfg, ctx)[0]

    rows = []
    for name in args.variants:
        load = os.getloadavg()[0]
        start = time.perf_counter()
        model = build(name)
        seconds = time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            ppl = window_perplexity(model, test, args.max_length, None, args.max_length)
        rows.append({"variant": name, "perplexity": round(ppl, 4), "build_s": round(seconds, 1),
                     "load_avg_at_start": round(load, 2)})
        print(f"{name}: perplexity {ppl:.4f}, built in {seconds:.1f}s (load average {load:.2f})", flush=True)
        del model

    ref = next((r["perplexity"] for r in rows if r["variant"] == "bf16"), None)
    print("\n| variant | perplexity | vs bf16 | build s | load avg |\n|---|---:|---:|---:|---:|")
    for r in rows:
        rel = f"{100 * (r['perplexity'] / ref - 1):+.1f}%" if ref else ""
        print(f"| {r['variant']} | {r['perplexity']:.3f} | {rel} | {r['build_s']:.1f} | {r['load_avg_at_start']:.2f} |")
    by = {r["variant"]: r["perplexity"] for r in rows}
    summary = {}
    for g in (64, 32):
        rtn, best = by.get(f"rtn_g{g}"), by.get(f"gptq_g{g}")
        if ref and rtn and best:
            summary[f"gptq_g{g}_gap_closed"] = round((rtn - best) / (rtn - ref), 3)
    if ref and by.get("rtn_g64") and by.get("qat_g64"):
        summary["qat_g64_gap_recovered"] = round((by["rtn_g64"] - by["qat_g64"]) / (by["rtn_g64"] - ref), 3)
    if ref and by.get("rtn_g64") and by.get("ft_g64"):
        summary["ft_g64_gap_recovered"] = round((by["rtn_g64"] - by["ft_g64"]) / (by["rtn_g64"] - ref), 3)
    for k, v in summary.items():
        print(f"{k}: {v:.1%} of the RTN perplexity gap to bf16")
    print(NOTE)
    if args.out:
        from lmops.io import write_json

        write_json(args.out, {"rows": rows, "summary": summary, "tokens": len(test), "threads": args.threads,
                              "note": NOTE})
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
