"""Prefect tasks of the retraining flow; each calls one lmops.retrain function."""
from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from lmops.params import Params


@task(name="snapshot-data", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def snapshot_data(p: Params, project: str, window: dict) -> tuple[str, dict]:
    """Write the retraining dataset and version it with DVC (`dvc add`, when the project uses DVC)."""
    from lmops.retrain.run import snapshot

    out, manifest = snapshot(p, Path(project), window)
    if (Path(project) / ".dvc").is_dir():
        from tasks.dvc import _dvc

        _dvc(["add", str(out)], project)
    return str(out), manifest


@task(name="finetune-lora", cache_policy=NO_CACHE)
def finetune(p: Params, project: str, champion_dir: str, dataset: str) -> dict:
    """The LoRA fine-tune, its steps shown as the progress artifact `progress-retrain-finetune`."""
    import time

    from lmops.progress import add_listener
    from lmops.retrain.run import finetune as run
    from tasks.dvc import StageProgress

    progress = StageProgress("retrain-finetune", time.monotonic())

    def on_progress(label: str, done: int, total: int) -> None:
        try:
            progress.update(label, done, total)
        except Exception:  # an artifact is a view: it never fails the fine-tune
            pass

    remove = add_listener(on_progress)
    try:
        result = run(p, Path(project), Path(champion_dir), Path(dataset))
    finally:
        remove()
    progress.finish()
    return result


@task(name="quantize-challenger", cache_policy=NO_CACHE)
def quantize(p: Params, project: str, model_dir: str) -> str:
    from lmops.retrain.run import quantize_hook

    return str(quantize_hook(p, Path(project), Path(model_dir)))


@task(name="update-knowledge-index", cache_policy=NO_CACHE)
def update_index(p: Params, project: str, dataset: str, model_dir: str) -> dict:
    """Add the drifted topic's documents to the knowledge index (LanceDB, a new version)."""
    from lmops.retrain.run import update_index as run

    return run(p, Path(project), Path(dataset), Path(model_dir))


@task(name="evaluate-model", task_run_name="evaluate-{label}", cache_policy=NO_CACHE)
def evaluate(p: Params, project: str, model_dir: str, trained: list[str], label: str, index: dict | None = None,
             version: int | None = None) -> dict:
    from lmops.retrain.run import evaluate as run

    return run(p, Path(project), Path(model_dir), set(trained), index, version)


@task(name="gate-and-promote", retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def gate_and_promote(p: Params, project: str, parent_version: str, full_dir: str, served_dir: str, dataset: str,
                     champ: dict, chall_full: dict, chall: dict, window: dict, index: dict | None = None) -> dict:
    from lmops.retrain.run import register_and_gate

    return register_and_gate(p, Path(project), parent_version, Path(full_dir), Path(served_dir), Path(dataset),
                             champ, chall_full, chall, window, index)
