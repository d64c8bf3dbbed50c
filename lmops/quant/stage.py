"""`lmops stage quantize`: build, save, reload and evaluate every scheme of the grid, then write
`metrics/quantization.json`, the markdown table and the memory-vs-perplexity frontier."""
from __future__ import annotations

import time
from pathlib import Path

from lmops.io import atomic_dir, write_json, write_text
from lmops.params import Params

QUANT_DIR = Path("models/quantized")
METRICS = Path("metrics/quantization.json")
PLOT_CSV = Path("plots/quantization.csv")
PLOT_PNG = Path("plots/quantization_frontier.png")
TABLE_MD = Path("plots/quantization.md")


def _calibration(tokenizer, corpus, qp) -> list:
    """`calib_sequences` windows of the val split: never the test split the variants are scored on."""
    import torch

    from lmops.model.evaluate import token_stream

    ids = token_stream(tokenizer, [d["text"] for d in corpus.split(corpus.documents, "val")],
                       qp.calib_sequences * qp.max_length)
    return [torch.tensor([ids[i:i + qp.max_length]]) for i in range(0, len(ids), qp.max_length)]


def build_context(qp, base: Path, corpus, threads: int):
    """(BuildContext, tokenizer): what every scheme is built from, with the `quantize` section's
    calibration windows and the training texts that QAT and LoRA schemes fine-tune on."""
    from lmops.model.build import load_model
    from lmops.model.train import training_texts
    from lmops.quant.build import BuildContext

    _, tokenizer = load_model(base)
    ctx = BuildContext(base=base, calib=_calibration(tokenizer, corpus, qp), train_texts=training_texts(corpus, qp.seed),
                       context=qp.max_length, threads=threads, seed=qp.seed)
    return ctx, tokenizer


def variant_meta(scheme, fmt: str, **extra) -> dict:
    """quant.json of a built scheme: what `load_variant` needs to read it back."""
    return {"scheme": scheme.name, "format": fmt, "kv": None if scheme.kv is None else vars(scheme.kv),
            "weights": type(scheme.weights).__name__, **extra}


def run_grid(p: Params, root: Path, progress: bool = True) -> dict:
    import torch
    from tqdm.auto import tqdm

    from lmops.data import Corpus
    from lmops.model.build import check_model_dir
    from lmops.quant.artifact import save_variant
    from lmops.quant.build import build_variant
    from lmops.quant.evaluate import decode_speeds, eval_data, evaluate_variant
    from lmops.quant.schemes import build_scheme
    from lmops.stages import CORPUS

    qp = p.quantize
    torch.set_num_threads(qp.threads)
    schemes = [build_scheme(name, qp) for name in qp.schemes]
    base = check_model_dir(Path(qp.base) if Path(qp.base).is_absolute() else root / qp.base)
    corpus = Corpus.load(root / CORPUS)
    ctx, tokenizer = build_context(qp, base, corpus, qp.threads)
    data = eval_data(corpus, tokenizer, qp)
    results: dict[str, dict] = {}
    with atomic_dir(root / QUANT_DIR) as tmp:
        for scheme in tqdm(schemes, desc="quantize", disable=not progress, unit="scheme"):
            start = time.perf_counter()
            model, tok, fmt = build_variant(scheme, ctx)
            seconds = time.perf_counter() - start
            save_variant(model, tok, tmp / scheme.name, variant_meta(scheme, fmt))
            del model
            results[scheme.name] = evaluate_variant(tmp / scheme.name, data, qp, seconds)
            torch.set_num_threads(qp.threads)  # fine-tunes may have changed it
        speeds = decode_speeds({name: tmp / name for name in results}, data.decode_prompt, qp.decode_tokens,
                               qp.decode_repeats)
    for name, tps in speeds.items():
        results[name]["tokens_per_s"] = tps
    return {"baseline": qp.baseline, "context_tokens": qp.context_tokens, "schemes": results}


def stage_quantize(p: Params, root: Path) -> dict:
    from lmops.quant.report import frontier_plot, markdown_table, plot_rows

    metrics = run_grid(p, root)
    write_json(root / METRICS, metrics)
    write_text(root / TABLE_MD, markdown_table(metrics))
    rows = plot_rows(metrics)
    write_text(root / PLOT_CSV, "scheme,total_kib,perplexity\n" + "".join(
        f"{r['scheme']},{r['total_kib']},{r['perplexity']}\n" for r in rows))
    frontier_plot(metrics, root / PLOT_PNG)
    return metrics
