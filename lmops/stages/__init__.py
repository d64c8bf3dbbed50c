"""The pipeline's stages, one module per `dvc.yaml` stage. Each reads its params section and its
input files (paths from `lmops.layout`), calls the library, and writes its outputs atomically.
`dvc.yaml` runs them through `lmops stage NAME`; Prefect runs them through `dvc repro`.

The library packages never import from here; a stage module is imported only when it runs, so
`lmops --help` and `dvc status` stay fast and each stage's imports are exactly its own."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

from lmops.params import Params

# stage name -> module under lmops.stages holding `run(p, root) -> dict`
STAGES: dict[str, str] = {
    "check": "check",  # validates params.yaml before `dvc repro` deletes any output
    "data": "data",
    "train": "train",
    "evaluate": "evaluate",
    "prompts": "prompts",
    "quantize": "quantize",
    "long_context": "long_context",
    "summary": "summary",
    "real_model": "real_model",
}
# No `drift` stage: the closed loop is the Prefect flow `lmops-scenario` (flows/scenario.py), which
# `lmops-pipeline` runs after these stages; its summary, metrics/drift.json, is a top-level dvc.yaml metric.


def stage_module(name: str):
    if name not in STAGES:
        from lmops.errors import LmopsError

        raise LmopsError(f"unknown stage {name!r}; stages are: {', '.join(STAGES)}")
    return importlib.import_module(f"lmops.stages.{STAGES[name]}")


def run_stage(name: str, p: Params, root: Path = Path(".")) -> dict:
    return stage_module(name).run(p, Path(root))


def summary(result: dict) -> str:
    return json.dumps(result, indent=2)
