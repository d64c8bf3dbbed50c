"""The pipeline's stages: each reads its params section and its input files, calls the pure
functions of the library, and writes its outputs atomically. `dvc.yaml` runs them through
`lmops stage NAME`; Prefect runs them through `dvc repro`, so both skip the same unchanged work."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Callable

from lmops.io import read_json, write_json, write_text
from lmops.monitor.stage import stage_drift
from lmops.longctx.stage import stage_long_context
from lmops.params import Params, TrainParams
from lmops.prompts.stage import stage_prompts  # light at import time: heavy imports are inside
from lmops.quant.stage import stage_quantize

CORPUS = Path("data/corpus")
BASE_MODEL = Path("models/base")
TRAIN_STATS = "train_stats.json"


def stage_data(p: Params, root: Path) -> dict:
    from lmops.data import build_corpus

    counts = build_corpus(p.data, root / CORPUS)
    return {"corpus": str(CORPUS), **counts}


def _start_model(tp: TrainParams, texts: list[str], root: Path):
    """A model to train: from scratch (tokenizer trained on `texts`) or loaded from `tp.base`."""
    from lmops.model.build import build_model, load_model, train_tokenizer

    if tp.base == "scratch":
        tokenizer = train_tokenizer(texts, tp.arch.vocab_size)
        return build_model(tp.arch, tokenizer, tp.context, tp.seed), tokenizer
    base = Path(tp.base) if Path(tp.base).is_absolute() else root / tp.base
    return load_model(base)


def save_model(model, tokenizer, out: Path, stats: dict) -> None:
    from lmops.io import atomic_dir

    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / TRAIN_STATS, stats)


def train_and_save(tp: TrainParams, root: Path, out: Path, plot_name: str, checkpoint_every: int = 0) -> dict:
    """Train (or fine-tune) per `tp` on the corpus' train split and save a Hugging Face directory."""
    from lmops.data import Corpus
    from lmops.model.build import count_params
    from lmops.model.train import train_lm, training_texts

    corpus = Corpus.load(root / CORPUS)
    texts = training_texts(corpus, tp.seed)
    model, tokenizer = _start_model(tp, texts, root)
    def snapshot(step: int) -> None:
        save_model(model, tokenizer, root / out, {"base": tp.base, "snapshot_step": step})

    warm = induction_warmup(model, tokenizer, tp)
    result = train_lm(model, tokenizer, texts, context=tp.context, steps=tp.steps, batch_size=tp.batch_size,
                      lr=tp.lr, warmup=tp.warmup, weight_decay=tp.weight_decay, seed=tp.seed, threads=tp.threads,
                      checkpoint=snapshot, checkpoint_every=checkpoint_every, repeat_share=tp.repeat_share)
    stats = {"base": tp.base, "params": count_params(model), "train_tokens": warm.tokens + result.tokens,
             "train_seconds": round(warm.seconds + result.seconds, 2), "context": tp.context,
             "steps": tp.induction.steps + tp.steps, "final_loss": result.losses[-1][1]}
    save_model(model, tokenizer, root / out, stats)
    n = len(warm.losses)  # one curve: the warm-up's steps first
    write_loss_plot(warm.losses + [(n + s, loss) for s, loss in result.losses], root / "plots" / plot_name)
    return stats


def induction_warmup(model, tokenizer, tp: TrainParams):
    """`tp.induction.steps` steps on repeat rows only (none when 0): installs the copying circuit."""
    from lmops.model.train import TrainResult, train_lm

    ip = tp.induction
    if not ip.steps:
        return TrainResult()
    return train_lm(model, tokenizer, [], context=ip.context, steps=ip.steps, batch_size=ip.batch_size, lr=ip.lr,
                    warmup=min(50, ip.steps), seed=tp.seed, threads=tp.threads, repeat_share=1.0,
                    repeat_span=ip.span, cosine=False, desc="induction warm-up")  # decay would slow its onset


def write_loss_plot(losses: list[tuple[int, float]], path: Path) -> None:
    """The loss curve as CSV (a DVC plot) and PNG (for people and Prefect artifacts)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["step", "loss"])
    writer.writerows(losses)
    write_text(path.with_suffix(".csv"), buf.getvalue())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([s for s, _ in losses], [l for _, l in losses], lw=1)
    ax.set(xlabel="step", ylabel="training loss", title="Training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path.with_suffix(".png"))


def stage_train(p: Params, root: Path) -> dict:
    return train_and_save(p.train, root, BASE_MODEL, "train_loss")


def evaluate_model_dir(model_dir: Path, p: Params, root: Path, context: int) -> dict:
    import torch

    from lmops.data import Corpus
    from lmops.model.build import count_params, load_model
    from lmops.model.evaluate import evaluate_base

    torch.set_num_threads(p.evaluate.threads)
    model, tokenizer = load_model(model_dir)
    e = p.evaluate
    metrics = evaluate_base(model, tokenizer, Corpus.load(root / CORPUS), context=context, ppl_tokens=e.ppl_tokens,
                            max_items=e.max_items, max_new_tokens=e.max_new_tokens)
    stats = read_json(model_dir / TRAIN_STATS)
    return {**metrics, "params": count_params(model), "train_tokens": stats["train_tokens"],
            "train_seconds": stats["train_seconds"], "base": stats["base"], "context": context}


def stage_evaluate(p: Params, root: Path) -> dict:
    metrics = evaluate_model_dir(root / BASE_MODEL, p, root, p.train.context)
    write_json(root / "metrics" / "base.json", metrics)
    return metrics


STAGES: dict[str, Callable[[Params, Path], dict]] = {
    "data": stage_data,
    "train": stage_train,
    "evaluate": stage_evaluate,
    "prompts": stage_prompts,
    "quantize": stage_quantize,
    "drift": stage_drift,
    "long_context": stage_long_context,
}


def run_stage(name: str, p: Params, root: Path = Path(".")) -> dict:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages are: {', '.join(STAGES)}")
    return STAGES[name](p, root)


def summary(result: dict) -> str:
    return json.dumps(result, indent=2)


def model_card(tp: TrainParams, metrics: dict) -> str:
    rows = "\n".join(f"| `{k}` | {v} |" for k, v in metrics.items())
    recipe = "\n".join(f"- `{k}`: {v}" for k, v in tp.model_dump(mode="json").items())
    return (f"# lmops base checkpoint\n\nA {tp.arch.type}-architecture causal LM trained from scratch on the embedded "
            f"default corpus (`lmops stage data` with the default `data` params) by `lmops pretrain`.\n\n"
            f"## Recipe (params.yaml `pretrain` section)\n{recipe}\n\n"
            f"## Metrics measured by that run (held-out entities and recall items)\n| metric | value |\n|---|---|\n{rows}\n")


def pretrain(p: Params, root: Path = Path(".")) -> dict:
    """Train the committed base checkpoint from scratch, evaluate it and write its model card."""
    out = Path(p.pretrain.out)
    train_and_save(p.pretrain, root, out, "pretrain_loss", checkpoint_every=250)
    metrics = evaluate_model_dir(root / out, p, root, p.pretrain.context)
    write_text(root / out / "README.md", model_card(p.pretrain, metrics))
    return metrics
