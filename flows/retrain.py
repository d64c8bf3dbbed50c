"""`lmops-retrain`: started by the `lmops.drift.detected` event (see deployments/serve.py).

snapshot the drifted data as a DVC-versioned dataset -> the drifted topic's documents added to the
knowledge index (LanceDB, a new version) -> LoRA fine-tune of the champion (merged) ->
quantization (`drift.retrain.quantize`) -> evaluation of the champion, the full-precision challenger and
its quantized variant, on held-out questions of the new topic (never trained on, never indexed), open-book
through the index version each would serve with -> gate (on the variant that would be served) -> register both, and promote the
variant if the gate passes. The server polls the registry and hot-reloads the new champion.
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from tasks.params import validate_params
from tasks.retrain import evaluate, finetune, gate_and_promote, quantize, snapshot_data, update_index


@flow(name="lmops-retrain", log_prints=True)
def retrain(project: str = ".", window: dict | None = None, scores: dict | None = None, event_id: str = "") -> dict:
    """`window` = {"start", "end"} of the drifted logs (from the event payload)."""
    from lmops.retrain.run import CHALLENGER, champion, full_precision

    p = validate_params(project)
    if not window:
        raise ValueError("retrain needs the drifted window {'start', 'end'} (the drift event's payload)")
    print(f"retraining for drift event {event_id or '(manual)'} on window {window}; scores {scores}")
    dataset, manifest = snapshot_data(p, project, window)
    champ_dir, champ_version = champion(p, Path(project))
    base_dir, base_version = full_precision(p, Path(project), champ_dir, champ_version)
    index = update_index(p, project, dataset, str(champ_dir))
    stats = finetune(p, project, str(base_dir), dataset)
    full = str(Path(project) / CHALLENGER)
    served = quantize(p, project, full)  # the variant that would be served (`full` when quantize is "none")
    trained = manifest["faq_questions"] + manifest["asked_questions"]
    champ = evaluate(p, project, str(champ_dir), trained, "champion", index, index["before"])
    chall_full = evaluate(p, project, full, trained, "challenger", index)
    chall = chall_full if served == full else evaluate(p, project, served, trained,
                                                       f"challenger-{p.drift.retrain.quantize}", index)
    record = gate_and_promote(p, project, base_version, full, served, dataset, champ, chall_full, chall, window, index)
    rows = "\n".join(f"| {k} | {champ[k]} | {chall_full[k]} | {chall[k]} |" for k in chall)
    create_markdown_artifact(
        f"# Drift retraining: {'promoted' if record['promoted'] else 'kept the champion'}\n\n{record['reason']}\n\n"
        f"| metric | champion {champ_version} | challenger {record['full_version']} (full) | "
        f"challenger {record['version']} ({record['variant']}, gated and served) |\n|---|---|---|---|\n{rows}\n\n"
        f"Dataset `{dataset}`: {manifest['texts']} texts ({len(manifest['asked_questions'])} asked questions); "
        f"{len(manifest['gate_questions'])} held-out gate questions. Knowledge index version {index['before']} -> "
        f"{index['after']} (+{index['added_documents']} documents). "
        f"Fine-tune: {stats['steps']} LoRA steps in {stats['train_seconds']} s.",
        key="lmops-retrain", description="drift-triggered retraining outcome")
    return {**record, "event_id": event_id, "finetune": stats}


if __name__ == "__main__":
    retrain()
