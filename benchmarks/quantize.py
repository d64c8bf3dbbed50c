"""Quantization targets and kernels, measured on this machine in one run, printed as tables.

    python benchmarks/quantize.py                 # read metrics/quantization.json (from `lmops stage quantize`)
    python benchmarks/quantize.py --run           # run the stage first (params.yaml `quantize` section)
    python benchmarks/quantize.py --run --base /work/main/models/pretrained

    # the kernel benchmark (issue 14): build each variant of a model, save, reload, then measure bytes
    # (short and full native context), held-out perplexity, decode and prefill speed side by side
    # (round-robin repeats, best of), this machine's memory bandwidth, each variant's bandwidth limit
    python benchmarks/quantize.py --model models/smollm2-135m-instruct --threads 2
    python benchmarks/quantize.py --model models/pretrained --threads 2       # the embedded model

Every figure comes from what this run (or the stage's run) measured.
"""
from __future__ import annotations

import argparse
import os
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


KERNEL_SCHEMES = ["fp32", "bf16", "w8", "w8_kv8", "kv8", "w8a8_smoothquant", "w4_rtn", "w4_rtn_e4"]


def memory_bandwidth(mib: int = 512, repeats: int = 5) -> dict[str, float]:
    """This machine's memory bandwidth in GB/s with the current torch threads: best of `repeats` of a
    read (sum of a `mib` MiB float32 tensor: bytes read) and a copy (read + write)."""
    import torch

    a = torch.ones(mib * 2**20 // 4)
    b = torch.empty_like(a)
    best = {"read": 0.0, "copy": 0.0}
    for _ in range(repeats):
        t = time.perf_counter()
        a.sum()
        best["read"] = max(best["read"], a.nbytes / (time.perf_counter() - t) / 1e9)
        t = time.perf_counter()
        b.copy_(a)
        best["copy"] = max(best["copy"], 2 * a.nbytes / (time.perf_counter() - t) / 1e9)
    return {k: round(v, 2) for k, v in best.items()}


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::_weight_int8pack_mm", "aten::_weight_int4pack_mm_for_cpu",
              "aten::_weight_int4pack_mm", "onednn::qlinear_pointwise", "aten::_int_mm")


def matmul_ms_per_token(model, kv, prompt, tokens: int = 8) -> float:
    """Self time of the weight matmul kernels per decoded token (torch.profiler, after the timed runs):
    what the kernels cost, apart from the framework's per-token work around them."""
    from torch.profiler import profile

    from lmops.quant.evaluate import _timed_decode
    from lmops.quant.kv import generate_kwargs

    with profile() as prof:
        _timed_decode(model, prompt, tokens, generate_kwargs(kv))
    us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMUL_OPS)
    return us / 1e3 / tokens


def _english_ids(tokenizer, path: Path, n: int) -> list[int]:
    from lmops.model.evaluate import token_stream

    paras = [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    return token_stream(tokenizer, paras, n)


def build_variants(model_dir: Path, names: list[str], out: Path, qp, calib_text: Path) -> dict[str, float]:
    """Build, save (in `out/<name>`) every scheme of `names` from `model_dir`; returns build seconds."""
    import torch

    from lmops.model.build import load_model
    from lmops.quant.artifact import save_variant, variant_meta
    from lmops.quant.build import BuildContext, build_variant
    from lmops.quant.schemes import build_scheme

    _, tok = load_model(model_dir)
    ids = _english_ids(tok, calib_text, qp.calib_sequences * qp.max_length)
    calib = [torch.tensor([ids[i:i + qp.max_length]]) for i in range(0, len(ids), qp.max_length)]
    ctx = BuildContext(base=model_dir, calib=calib, context=qp.max_length, threads=torch.get_num_threads())
    seconds = {}
    for name in names:
        scheme = build_scheme(name, qp)
        start = time.perf_counter()
        model, tokenizer, fmt = build_variant(scheme, ctx)
        seconds[name] = time.perf_counter() - start
        (out / name).mkdir(parents=True)
        save_variant(model, tokenizer, out / name, variant_meta(scheme, fmt))
        print(f"built {name} in {seconds[name]:.1f} s", flush=True)
        del model
    return seconds


def kernel_bench(model_dir: Path, names: list[str], qp, args) -> dict:
    """Every figure of the kernel table for `names`, measured on the saved and reloaded variants."""
    import tempfile

    import torch

    from lmops.quant.artifact import load_variant, saved_weight_bytes
    from lmops.quant.config import KVCacheConfig
    from lmops.quant.evaluate import _timed_decode
    from lmops.quant.kv import generate_kwargs, kv_bytes_filled, native_context, new_cache, window_perplexity

    torch.set_num_threads(args.threads)
    res: dict = {"model": str(model_dir), "threads": args.threads, "context_tokens": qp.context_tokens, "schemes": {},
                 "load_average_start": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as tmp:
        build_s = build_variants(model_dir, names, Path(tmp), qp, Path(args.calibration))
        loaded = {}
        for name in names:
            model, tok, meta = load_variant(Path(tmp) / name)
            kv = KVCacheConfig(**meta["kv"]) if meta.get("kv") else None
            ids = _english_ids(tok, Path(args.text), max(args.ppl_tokens, args.prefill_tokens, args.prompt_tokens))
            full = native_context(model)
            w = saved_weight_bytes(Path(tmp) / name)
            decode_ctx = args.prompt_tokens + args.decode_tokens // 2  # mean context while decoding
            row = {"weight_bytes": w, "kv_bytes": kv_bytes_filled(model, kv, qp.context_tokens, qp.kv_chunk),
                   "full_context_tokens": full, "kv_bytes_full": kv_bytes_filled(model, kv, full, qp.kv_chunk),
                   "bytes_per_token": w + kv_bytes_filled(model, kv, decode_ctx, 1),
                   "perplexity": round(window_perplexity(model, ids[:args.ppl_tokens], qp.max_length, kv, qp.kv_chunk), 4)
                   if args.ppl_tokens else None,
                   "build_seconds": round(build_s[name], 1)}
            row["total_bytes"] = w + row["kv_bytes"]
            row["total_bytes_full"] = w + row["kv_bytes_full"]
            res["schemes"][name] = row
            print(f"measured {name}: ppl {row['perplexity']}", flush=True)
            loaded[name] = (model, kv, ids)
        res["bandwidth_gbs"] = memory_bandwidth()
        prompt = torch.tensor([next(iter(loaded.values()))[2][:args.prompt_tokens]])
        prefill_ids = torch.tensor([next(iter(loaded.values()))[2][:args.prefill_tokens]])

        def prefill(model, kv):
            with torch.no_grad():
                t = time.perf_counter()
                model(input_ids=prefill_ids, past_key_values=new_cache(model, kv), use_cache=True)
                return prefill_ids.shape[1] / (time.perf_counter() - t)

        for model, kv, _ in loaded.values():  # warm-up (kernel layouts are built on first call)
            _timed_decode(model, prompt, 4, generate_kwargs(kv))
            prefill(model, kv)
        best = {n: {"decode": 0.0, "prefill": 0.0} for n in loaded}
        for r in range(args.repeats):  # round robin: a slow spell of the shared machine hits every variant
            for name, (model, kv, _) in loaded.items():
                best[name]["decode"] = max(best[name]["decode"],
                                           _timed_decode(model, prompt, args.decode_tokens, generate_kwargs(kv)))
                best[name]["prefill"] = max(best[name]["prefill"], prefill(model, kv))
            print(f"speed round {r + 1}/{args.repeats} done", flush=True)
        for name, (model, kv, _) in loaded.items():
            res["schemes"][name]["matmul_ms_per_token"] = round(matmul_ms_per_token(model, kv, prompt), 2)
        bw = res["bandwidth_gbs"]["read"] * 1e9
        for name, row in res["schemes"].items():
            row["decode_tok_s"] = round(best[name]["decode"], 2)
            row["prefill_tok_s"] = round(best[name]["prefill"], 1)
            row["bandwidth_limit_tok_s"] = round(bw / row["bytes_per_token"], 2)
            row["bandwidth_fraction"] = round(row["decode_tok_s"] / row["bandwidth_limit_tok_s"], 3)
            row["matmul_bandwidth_fraction"] = round(1e3 / row["matmul_ms_per_token"] / row["bandwidth_limit_tok_s"], 3)
    res["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return res


def kernel_table(res: dict) -> str:
    s = res["schemes"]
    full = next(iter(s.values()))["full_context_tokens"]
    lines = [f"model {res['model']}, {res['threads']} threads, memory bandwidth {res['bandwidth_gbs']['read']} GB/s "
             f"read / {res['bandwidth_gbs']['copy']} GB/s copy, load average {res['load_average_start']} at start, "
             f"{res['load_average']} at end", "",
             f"| variant | weight MB | KV MB @{res['context_tokens']} | total MB | KV MB @{full} "
             f"| total MB @{full} | ppl | decode tok/s | vs fp32 | vs bf16 | prefill tok/s | vs fp32 | vs bf16 "
             f"| MB read/token | BW limit tok/s | of limit | matmul ms/token | matmuls alone: of limit |",
             "|---|" + "---:|" * 17]

    def ratio(m, key, ref):
        return f"{m[key] / s[ref][key]:.2f}x" if ref in s else "-"

    for n, m in s.items():
        lines.append(f"| {n} | {m['weight_bytes'] / 1e6:.1f} | {m['kv_bytes'] / 1e6:.2f} | {m['total_bytes'] / 1e6:.1f} "
                     f"| {m['kv_bytes_full'] / 1e6:.1f} | {m['total_bytes_full'] / 1e6:.1f} | {m['perplexity'] or float('nan'):.3f} "
                     f"| {m['decode_tok_s']:.1f} | {ratio(m, 'decode_tok_s', 'fp32')} | {ratio(m, 'decode_tok_s', 'bf16')} "
                     f"| {m['prefill_tok_s']:.0f} | {ratio(m, 'prefill_tok_s', 'fp32')} | {ratio(m, 'prefill_tok_s', 'bf16')} "
                     f"| {m['bytes_per_token'] / 1e6:.1f} | {m['bandwidth_limit_tok_s']:.1f} "
                     f"| {m['bandwidth_fraction']:.0%} | {m['matmul_ms_per_token']:.1f} "
                     f"| {m['matmul_bandwidth_fraction']:.0%} |")
    return "\n".join(lines)


def kernel_targets(res: dict) -> list[tuple[str, str, str, bool | None]]:
    """Issue 14's targets on the kernel run (None: a variant it needs was not run)."""
    s, rows = res["schemes"], []

    def dec(n):
        return s[n]["decode_tok_s"]

    int8 = [n for n in ("w8", "w8_kv8", "w8a8_smoothquant") if n in s]
    if int8 and {"fp32", "bf16"} <= set(s):
        b = max(int8, key=dec)
        rows.append((f"best int8 ({b}) decode vs fp32", f"{dec(b) / dec('fp32'):.2f}x", ">= 1.5x", dec(b) >= 1.5 * dec("fp32")))
        rows.append((f"best int8 ({b}) decode vs bf16", f"{dec(b) / dec('bf16'):.2f}x", ">= 1.2x", dec(b) >= 1.2 * dec("bf16")))
    int4 = [n for n in s if n.startswith("w4")]
    if int4 and "fp32" in s:
        b = max(int4, key=dec)
        rows.append((f"best int4 ({b}) decode vs fp32", f"{dec(b) / dec('fp32'):.2f}x", ">= 2x", dec(b) >= 2 * dec("fp32")))
    if {"w8_kv8", "bf16"} <= set(s):
        r = s["w8_kv8"]["total_bytes_full"] / s["bf16"]["total_bytes_full"]
        rows.append(("w8_kv8 total bytes at full context vs bf16", f"{r:.3f}x", "<= 0.50x", r <= 0.5))
        if s["bf16"]["perplexity"]:
            d = s["w8_kv8"]["perplexity"] / s["bf16"]["perplexity"] - 1
            rows.append(("w8_kv8 perplexity vs bf16", f"{d:+.2%}", "within +1%", d <= 0.01))
    if {"w8_kv8", "w8"} <= set(s):
        cut = 1 - s["w8_kv8"]["total_bytes_full"] / s["w8"]["total_bytes_full"]
        rows.append(("int8 KV: further total reduction at full context (w8 -> w8_kv8)", f"{-cut:+.1%}", "<= -15%",
                     cut >= 0.15))
    for n, m in s.items():
        rows.append((f"{n}: decode share of its bandwidth limit", f"{m['bandwidth_fraction']:.0%}", ">= 50%",
                     m["bandwidth_fraction"] >= 0.5))
    return rows


def print_targets(rows) -> None:
    w = max(len(r[0]) for r in rows)
    print(f"{'target':<{w}}  {'measured':<44} {'goal':<10} status")
    for name, measured, goal, met in rows:
        print(f"{name:<{w}}  {measured:<44} {goal:<10} {'-' if met is None else 'MET' if met else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".", help="project directory (params.yaml, data/corpus, metrics/)")
    ap.add_argument("--run", action="store_true", help="run `lmops stage quantize` first")
    ap.add_argument("--base", help="model directory to quantize (overrides quantize.base)")
    ap.add_argument("--kv-context", type=int, default=0,
                    help="also measure w8 -> w8_kv8 total bytes at this context (reloads the saved variants)")
    ap.add_argument("--schemes", help="comma-separated schemes (overrides quantize.schemes, or the kernel "
                    f"benchmark's {','.join(KERNEL_SCHEMES)})")
    k = ap.add_argument_group("kernel benchmark (--model)")
    k.add_argument("--model", help="run the kernel benchmark on this Hugging Face model directory")
    k.add_argument("--threads", type=int, default=2, help="torch threads for every measurement")
    k.add_argument("--repeats", type=int, default=3, help="round-robin speed rounds (best kept)")
    k.add_argument("--decode-tokens", type=int, default=32, help="greedy tokens per decode run (batch 1)")
    k.add_argument("--prompt-tokens", type=int, default=32, help="decode prompt length")
    k.add_argument("--prefill-tokens", type=int, default=256, help="prefill length (one forward pass)")
    k.add_argument("--ppl-tokens", type=int, default=2048, help="held-out tokens for perplexity (same for all; "
                   "0: skip perplexity, a speed-only run)")
    k.add_argument("--text", default="data/english/heldout.txt", help="held-out text (perplexity, prompts)")
    k.add_argument("--calibration", default="data/english/calibration.txt", help="calibration text (SmoothQuant)")
    k.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args(argv)
    root = Path(args.root)

    if args.model:
        from lmops.io import write_json
        from lmops.params import load_params

        qp = load_params(root / "params.yaml").quantize
        names = args.schemes.split(",") if args.schemes else KERNEL_SCHEMES
        res = kernel_bench(Path(args.model), names, qp, args)
        print(kernel_table(res))
        print_targets(kernel_targets(res))
        if args.out:
            write_json(Path(args.out), res)
        return 0

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
    print_targets(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
