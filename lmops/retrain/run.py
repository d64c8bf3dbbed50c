"""The retraining steps as plain functions over a project directory (the flow wires them)."""
from __future__ import annotations

import importlib.util
import logging
from datetime import datetime, timezone
from pathlib import Path

from lmops.io import write_json
from lmops.params import Params

log = logging.getLogger("lmops.retrain")
SNAPSHOTS = Path("data/retrain")
CHALLENGER = Path("models/challenger")


def snapshot(p: Params, root: Path, window: dict) -> tuple[Path, dict]:
    """The drifted window's questions, labelled from the fresh documents, plus those documents."""
    from lmops.monitor.logs import Window, read_window
    from lmops.retrain.dataset import retrain_texts, write_snapshot
    from lmops.retrain.fresh import fresh_documents, fresh_qa

    logs = read_window(root / p.serve.log_dir, Window.of(window["start"], window["end"]))
    texts, provenance = retrain_texts(logs, fresh_documents(p.simulate), fresh_qa(p.simulate), p.drift.retrain.seed)
    out = SNAPSHOTS / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    return out, write_snapshot(root / out, texts, provenance, window)


def champion(p: Params, root: Path) -> tuple[Path, str]:
    """(model directory, version) the server is serving now."""
    from lmops.serve.app import champion_source

    return champion_source(p.serve, root)


def finetune(p: Params, root: Path, champion_dir: Path, dataset: Path) -> dict:
    """LoRA fine-tune of the champion on the snapshot (+ replayed old training texts), merged."""
    import torch

    from lmops.data import Corpus
    from lmops.io import read_jsonl
    from lmops.model.build import load_model
    from lmops.model.train import training_texts
    from lmops.retrain.finetune import lora_finetune, mix_replay, save_model

    rp = p.drift.retrain
    torch.set_num_threads(rp.threads)
    new = [r["text"] for r in read_jsonl(root / dataset / "texts.jsonl")]
    texts = mix_replay(new, training_texts(Corpus.load(root / "data/corpus"), rp.seed), rp.replay_share, rp.seed)
    model, tokenizer = load_model(champion_dir)
    merged, result = lora_finetune(model, tokenizer, texts, rp)
    stats = {"base": str(champion_dir), "dataset": str(dataset), "texts": len(texts), "new_texts": len(new),
             "steps": rp.steps, "train_seconds": result.seconds, "final_loss": result.losses[-1][1],
             "train_tokens": result.tokens, "lora_r": rp.lora_r}
    save_model(merged, tokenizer, root / CHALLENGER, stats)
    return stats


def quantize_hook(p: Params, root: Path, model_dir: Path) -> Path:
    """Re-run quantization on the challenger when the `quantize` stage exists (branch issue-quant);
    until then the full-precision challenger is what is evaluated and promoted."""
    if importlib.util.find_spec("lmops.quant") is None:
        log.info("no lmops.quant package: evaluating the full-precision challenger (quantization hook skipped)")
        return model_dir
    from lmops import quant  # noqa: F401  (the quantize stage's API is wired here when it lands)

    log.info("lmops.quant is present but not wired into retraining yet: evaluating full precision")
    return model_dir


def evaluate(p: Params, root: Path, model_dir: Path, trained_questions: set[str]) -> dict:
    import torch

    from lmops.data import Corpus
    from lmops.model.build import load_model
    from lmops.retrain.fresh import fresh_qa
    from lmops.retrain.gate import evaluate_candidate

    torch.set_num_threads(p.drift.retrain.threads)
    model, tokenizer = load_model(model_dir)
    return evaluate_candidate(model, tokenizer, Corpus.load(root / "data/corpus"), fresh_qa(p.simulate),
                              trained_questions, p.drift.retrain.eval_items)


def register_and_gate(p: Params, root: Path, champion_version: str, challenger_dir: Path, dataset: Path,
                      champ_metrics: dict, chall_metrics: dict, window: dict) -> dict:
    """Register the challenger with its lineage; promote it to champion only if the gate passes."""
    from lmops.registry import Lineage, Registry, dir_hash
    from lmops.retrain.gate import gate

    decision = gate(champ_metrics, chall_metrics, p.drift.retrain)
    registry = Registry(root, p.serve.registry_store)
    lineage = Lineage(data_hash=dir_hash(root / dataset), params=p.drift.retrain.model_dump(mode="json"),
                      parent=champion_version if registry.get(p.serve.model, champion_version) else None,
                      metrics=chall_metrics, variant="full")
    version = registry.register(p.serve.model, challenger_dir, lineage).version
    alias = "champion" if decision.promote else "challenger"
    registry.promote(p.serve.model, version, alias, message=f"drift retrain: {decision.reason}")
    record = {"version": version, "alias": alias, "promoted": decision.promote, **decision.as_dict(),
              "window": window, "dataset": str(dataset), "at": datetime.now(timezone.utc).isoformat()}
    write_json(root / ".lmops" / "retrain" / f"{version}.json", record)
    return record
