"""The `drift` stage: the closed loop's scenario (`deployments/scenario.py`) in a child process.

lmops never imports Prefect, so the stage runs the scenario as `python -m deployments.scenario`;
it starts its own Prefect server, worker and model server on loopback and writes metrics/drift.json.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lmops.io import InputError, read_json
from lmops.params import Params

CODE = Path(__file__).resolve().parent.parent.parent  # where flows/ and deployments/ live


def run(p: Params, root: Path) -> dict:
    if not (root / "models/base/config.json").exists():
        raise InputError(f"{root / 'models/base'} is missing: the drift scenario serves the trained base model")
    env = {**os.environ, "PYTHONPATH": str(CODE) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("PREFECT_API_URL", None)  # the scenario runs its own server; never the caller's
    proc = subprocess.run([sys.executable, "-m", "deployments.scenario", "--root", str(root.resolve())],
                          cwd=CODE, env=env)
    if proc.returncode:
        raise RuntimeError(f"the drift scenario failed ({proc.returncode}); process logs are in "
                           f"{root / '.lmops/drift-scenario/.lmops/logs'}")
    return read_json(root / "metrics" / "drift.json")
