"""The retraining steps as plain functions over a project directory (the flow wires them)."""
from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from lmops.io import write_json
from lmops.layout import CHALLENGER, CORPUS, RETRAIN_RECORDS, RETRAIN_SNAPSHOTS
from lmops.params import Params

log = logging.getLogger("lmops.retrain")


def snapshot(p: Params, root: Path, window: dict) -> tuple[Path, dict]:
    """The drifted window's questions, labelled from the fresh documents, plus those documents; the
    gate's held-out questions (`fresh.gate_split`) are named in the manifest and never trained on."""
    from lmops.monitor.logs import Window, read_window
    from lmops.retrain.dataset import retrain_texts, write_snapshot
    from lmops.retrain.fresh import fresh_documents, fresh_qa, gate_split

    logs = read_window(root / p.serve.log_dir, Window.of(window["start"], window["end"]))
    rp = p.drift.retrain
    qa, docs = fresh_qa(p.simulate), fresh_documents(p.simulate)
    _, held = gate_split(qa, rp.gate_questions, rp.seed)
    texts, provenance = retrain_texts(logs, docs, qa, rp.seed, rp.faq_per_entity, rp.qa_repeats,
                                      tuple(rp.document_kinds), heldout={r["question"] for r in held})
    out = RETRAIN_SNAPSHOTS / f"{datetime.now(UTC):%Y%m%dT%H%M%S}"
    return out, write_snapshot(root / out, texts, provenance, window, docs)


def update_index(p: Params, root: Path, dataset: Path, model_dir: Path) -> dict:
    """Add the snapshot's documents to the knowledge index (created from the corpus' documents the
    first time): {path, before, after, ...}; the champion is judged on `before`, the challenger on `after`."""
    from lmops.data import Corpus
    from lmops.io import read_jsonl
    from lmops.retrain.index import update
    from lmops.serve.engine import load_weights

    _, tokenizer = load_weights(model_dir)  # chunk lengths in the served model's tokens
    docs = read_jsonl(root / dataset / "documents.jsonl")
    return update(p, root, docs, tokenizer, Corpus.load(root / CORPUS).documents).as_dict()


def champion(p: Params, root: Path) -> tuple[Path, str]:
    """(model directory, version) the server is serving now."""
    from lmops.serve.app import champion_source

    return champion_source(p.serve, root)


def full_precision(p: Params, root: Path, model_dir: Path, version: str) -> tuple[Path, str]:
    """The full-precision model a (possibly quantized) champion was built from, found through its
    lineage's parents: fine-tuning starts from there, never from rounded weights."""
    from lmops.io import InputError
    from lmops.quant.artifact import QUANT_FILE
    from lmops.registry import Registry

    if not (model_dir / QUANT_FILE).is_file():
        return model_dir, version
    registry = Registry(root, p.serve.registry_store)
    found = registry.get(p.serve.model, version)
    while found is not None and (found.path / QUANT_FILE).is_file():
        found = registry.get(p.serve.model, found.lineage.parent) if found.lineage.parent else None
    if found is None:
        raise InputError(f"the champion {p.serve.model}@{version} is a quantized variant and its lineage names "
                         "no full-precision parent to fine-tune: register and promote a full-precision model")
    return found.path, found.version


def finetune(p: Params, root: Path, champion_dir: Path, dataset: Path) -> dict:
    """LoRA fine-tune of the champion on the snapshot (+ replayed old training texts), merged."""
    import torch

    from lmops.data import Corpus
    from lmops.io import read_jsonl
    from lmops.model.build import load_model, save_model
    from lmops.model.train import training_texts
    from lmops.retrain.finetune import lora_finetune, mix_replay

    rp = p.drift.retrain
    torch.set_num_threads(rp.threads)
    new = [r["text"] for r in read_jsonl(root / dataset / "texts.jsonl")]
    texts = mix_replay(new, training_texts(Corpus.load(root / CORPUS), rp.seed), rp.replay_share, rp.seed)
    model, tokenizer = load_model(champion_dir)
    merged, result = lora_finetune(model, tokenizer, texts, rp)
    stats = {"base": str(champion_dir), "dataset": str(dataset), "texts": len(texts), "new_texts": len(new),
             "steps": rp.steps, "train_seconds": result.seconds, "final_loss": result.losses[-1][1],
             "train_tokens": result.tokens, "lora_r": rp.lora_r}
    save_model(merged, tokenizer, root / CHALLENGER, stats)
    return stats


def quantized_dir(scheme: str) -> Path:
    return CHALLENGER.with_name(f"{CHALLENGER.name}-{scheme}")


def quantize_model(p: Params, root: Path, model_dir: Path, out: Path) -> Path:
    """Build `drift.retrain.quantize` from `model_dir` with the quantize stage's own code and settings
    (the `quantize` section: group size, calibration windows, ...) and save it as a variant directory
    that `load_variant` and the server read back."""
    import torch

    from lmops.data import Corpus
    from lmops.io import atomic_dir
    from lmops.quant.artifact import save_variant, variant_meta
    from lmops.quant.build import build_context, build_variant
    from lmops.quant.schemes import build_scheme

    rp, qp = p.drift.retrain, p.quantize
    scheme = build_scheme(rp.quantize, qp)
    torch.set_num_threads(rp.threads)
    ctx, _ = build_context(qp, model_dir, Corpus.load(root / CORPUS), rp.threads, root)
    model, tok, fmt = build_variant(scheme, ctx)
    with atomic_dir(out) as tmp:
        save_variant(model, tok, tmp, variant_meta(scheme, fmt, source=str(model_dir)))
    torch.set_num_threads(rp.threads)  # QAT/QLoRA builders set their own
    return out


def quantize_hook(p: Params, root: Path, model_dir: Path) -> Path:
    """The challenger as it would be served: quantized per `drift.retrain.quantize` into
    `models/challenger-<scheme>`, or `model_dir` itself when that is "none"."""
    scheme = p.drift.retrain.quantize
    if scheme == "none":
        log.info("drift.retrain.quantize is 'none': the full-precision challenger is evaluated and served")
        return model_dir
    out = quantize_model(p, root, root / model_dir, root / quantized_dir(scheme))  # root / absolute = absolute
    log.info("quantized the challenger (%s) into %s", scheme, out)
    return out


def evaluate(p: Params, root: Path, model_dir: Path, trained_questions: set[str],
             index: dict | None = None, version: int | None = None) -> dict:
    """The gate's evaluations of one candidate; with `index` (update_index's record), open-book on the
    held-out questions through the knowledge index at `version` (the champion's: index["before"])."""
    import torch

    from lmops.data import Corpus
    from lmops.retrain.fresh import fresh_qa, gate_split
    from lmops.retrain.gate import evaluate_candidate
    from lmops.serve.engine import load_weights

    rp = p.drift.retrain
    torch.set_num_threads(rp.threads)
    model, tokenizer = load_weights(model_dir)  # as the server will: a quantized variant by its own loader
    qa = fresh_qa(p.simulate)
    _, held = gate_split(qa, rp.gate_questions, rp.seed)
    retrieve = None
    if index is not None:
        from lmops.retrain.index import Retriever

        retrieve = Retriever(index["path"], index["after"] if version is None else version, p).context
    out = evaluate_candidate(model, tokenizer, Corpus.load(root / CORPUS), qa, trained_questions, rp.eval_items,
                             gate_qa=held, retrieve=retrieve)
    if index is not None:
        out["index_version"] = index["after"] if version is None else version
        if version is not None and version != index["after"]:
            # the champion's weights with the updated index: what the index update alone buys
            from lmops.retrain.gate import open_book_qa
            from lmops.retrain.index import Retriever

            out["new_qa_heldout_rag_new_index"] = open_book_qa(
                model, tokenizer, held[:rp.eval_items], Retriever(index["path"], index["after"], p).context)
    return out


def register_and_gate(p: Params, root: Path, parent_version: str, full_dir: Path, served_dir: Path, dataset: Path,
                      champ_metrics: dict, full_metrics: dict, served_metrics: dict, window: dict,
                      index: dict | None = None) -> dict:
    """Register the fine-tuned challenger and, when it differs, its quantized variant (parent: the
    full-precision one), each with its lineage; the gate reads the variant that would be served, and
    that variant becomes the champion only if the gate passes."""
    from lmops.registry import Lineage, Registry, dir_hash
    from lmops.retrain.gate import gate

    rp = p.drift.retrain
    decision = gate(champ_metrics, served_metrics, rp)
    registry = Registry(root, p.serve.registry_store)
    data, params = dir_hash(root / dataset), rp.model_dump(mode="json")
    full = registry.register(p.serve.model, full_dir, Lineage(
        data_hash=data, params=params, metrics=full_metrics, variant="full",
        parent=parent_version if registry.get(p.serve.model, parent_version) else None))
    served = full
    if Path(served_dir).resolve() != Path(full_dir).resolve():
        served = registry.register(p.serve.model, served_dir, Lineage(
            data_hash=data, params={"retrain": params, "quantize": p.quantize.model_dump(mode="json")},
            metrics=served_metrics, variant=rp.quantize, parent=full.version))
    alias = "champion" if decision.promote else "challenger"
    registry.promote(p.serve.model, served.version, alias, message=f"drift retrain: {decision.reason}")
    if p.serve.push_registry:  # both versions' bytes to the DVC remote, the tags to git (docs/scale-out.md)
        from lmops.remote import push_registry

        push_registry(root, p.serve.model)
    record = {"version": served.version, "variant": served.lineage.variant, "full_version": full.version,
              "full_metrics": full_metrics, "alias": alias, "promoted": decision.promote, **decision.as_dict(),
              "window": window, "dataset": str(dataset), "index": index, "gate_metric": rp.gate_metric, "at": datetime.now(UTC).isoformat()}
    write_json(root / RETRAIN_RECORDS / f"{served.version}.json", record)
    return record
