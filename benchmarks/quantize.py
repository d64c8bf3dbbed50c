"""Check issue 3's quantization targets on a real model and print a table.

    python benchmarks/quantize.py                 # read metrics/quantization.json (from `lmops stage quantize`)
    python benchmarks/quantize.py --run           # run the stage first (params.yaml `quantize` section)
    python benchmarks/quantize.py --run --base /work/main/models/pretrained

Every figure comes from the metrics the stage measured on this machine in that run.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def targets(m: dict) -> list[tuple[str, str, str, bool | None]]:
    """(target, measured, goal, met) rows; met is None where a scheme it needs was not run."""
    s, base = m["schemes"], m["schemes"][m["baseline"]]
    rows = []

    def need(*names):
        return all(n in s for n in names)

    if need("w8_kv8"):
        cut = 1 - s["w8_kv8"]["total_bytes"] / base["total_bytes"]
        dppl = s["w8_kv8"]["perplexity"] / base["perplexity"] - 1
        rows.append(("w8_kv8: total bytes vs baseline", f"{-cut:+.1%}", "<= -50%", cut >= 0.5))
        rows.append(("w8_kv8: perplexity vs baseline", f"{dppl:+.2%}", "within 1%", abs(dppl) <= 0.01))
    if need("w8", "w8_kv8"):
        cut = 1 - s["w8_kv8"]["total_bytes"] / s["w8"]["total_bytes"]
        rows.append((f"int8 KV cache alone: total bytes, w8 -> w8_kv8 at {m['context_tokens']} tokens",
                     f"{-cut:+.1%}", "<= -15%", cut >= 0.15))
    if need("kv8"):
        cut = 1 - s["kv8"]["total_bytes"] / base["total_bytes"]
        rows.append(("(info) kv8 alone: total bytes vs baseline", f"{-cut:+.1%}", "-", None))
    best = [n for n in ("w4_gptq", "w4_awq") if n in s]
    if best and need("w4_rtn", "bnb_nf4"):
        b = min(best, key=lambda n: s[n]["perplexity"])
        rivals = min(s["w4_rtn"]["perplexity"], s["bnb_nf4"]["perplexity"])
        rows.append((f"best int4 ({b}) perplexity vs min(w4_rtn, bnb_nf4)",
                     f"{s[b]['perplexity']:.3f} vs {rivals:.3f} (rtn {s['w4_rtn']['perplexity']:.3f}, "
                     f"nf4 {s['bnb_nf4']['perplexity']:.3f})", "lower", s[b]["perplexity"] < rivals))
    if need("w4_rtn", "qat_w4"):
        gap = s["w4_rtn"]["perplexity"] - base["perplexity"]
        rec = (s["w4_rtn"]["perplexity"] - s["qat_w4"]["perplexity"]) / gap if gap > 0 else float("nan")
        rows.append(("QAT (qat_w4): share of the int4 RTN perplexity gap recovered",
                     f"{rec:.0%} (gap {gap:+.3f}, qat {s['qat_w4']['perplexity']:.3f})", ">= 50%",
                     rec >= 0.5 if gap > 0 else None))
    if need("ft_w4_rtn", "qat_w4"):
        rows.append(("(info) QAT vs the same fine-tune without fake quant (ft_w4_rtn)",
                     f"{s['qat_w4']['perplexity']:.3f} vs {s['ft_w4_rtn']['perplexity']:.3f}", "-", None))
    if need("fp32"):
        fastest = max((n for n in s if n != "fp32"), key=lambda n: s[n]["tokens_per_s"])
        rows.append(("fastest variant decode tokens/s vs fp32",
                     f"{fastest} {s[fastest]['tokens_per_s']:.1f} vs fp32 {s['fp32']['tokens_per_s']:.1f}", "faster",
                     s[fastest]["tokens_per_s"] > s["fp32"]["tokens_per_s"]))
    return rows


def kv_at_context(root: Path, m: dict, context: int) -> list[tuple[str, str, str, bool | None]]:
    """The int8-KV saving at another context, measured on the saved w8 / w8_kv8 variants."""
    from lmops.layout import QUANT_DIR
    from lmops.params import load_params
    from lmops.quant.artifact import load_variant, saved_weight_bytes
    from lmops.quant.config import KVCacheConfig
    from lmops.quant.kv import kv_bytes

    if not {"w8", "w8_kv8"} <= set(m["schemes"]):
        return []
    chunk = load_params(root / "params.yaml").quantize.kv_chunk
    total = {}
    for name in ("w8", "w8_kv8"):
        model, tok, meta = load_variant(root / QUANT_DIR / name)
        kv = KVCacheConfig(**meta["kv"]) if meta.get("kv") else None
        total[name] = saved_weight_bytes(root / QUANT_DIR / name) + kv_bytes(model, kv, context, chunk, len(tok))
    cut = 1 - total["w8_kv8"] / total["w8"]
    return [(f"(info) int8 KV cache alone at {context} tokens: w8 -> w8_kv8", f"{-cut:+.1%}", "<= -15%", None)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".", help="project directory (params.yaml, data/corpus, metrics/)")
    ap.add_argument("--run", action="store_true", help="run `lmops stage quantize` first")
    ap.add_argument("--base", help="model directory to quantize (overrides quantize.base)")
    ap.add_argument("--kv-context", type=int, default=0,
                    help="also measure w8 -> w8_kv8 total bytes at this context (reloads the saved variants)")
    ap.add_argument("--schemes", help="comma-separated schemes (overrides quantize.schemes), e.g. to add ft_w4_rtn")
    args = ap.parse_args(argv)
    root = Path(args.root)

    from lmops.io import read_json
    from lmops.layout import QUANT_METRICS as METRICS
    from lmops.quant.report import markdown_table

    if args.run:
        from lmops.params import load_params, validate
        from lmops.stages.quantize import run as stage_quantize

        p = load_params(root / "params.yaml")
        override = {"base": args.base} if args.base else {}
        if args.schemes:
            override["schemes"] = args.schemes.split(",")
        raw = p.model_dump(mode="json")
        raw["quantize"].update(override)
        p = validate(raw)  # re-validated: an unknown scheme fails here
        start = time.perf_counter()
        stage_quantize(p, root)
        print(f"quantize stage wall time: {time.perf_counter() - start:.1f} s")
    m = read_json(root / METRICS)
    print(markdown_table(m))
    rows = targets(m)
    if args.kv_context:
        rows += kv_at_context(root, m, args.kv_context)
    w = max(len(r[0]) for r in rows)
    print(f"{'target':<{w}}  {'measured':<44} {'goal':<10} status")
    for name, measured, goal, met in rows:
        print(f"{name:<{w}}  {measured:<44} {goal:<10} {'-' if met is None else 'MET' if met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
