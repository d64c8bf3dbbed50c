"""The real-model profile, stage by stage: `make run-real` (or `python benchmarks/real_profile.py
[STAGE ...]`). Imports SmolLM2-135M-Instruct (the `real_model` stage, a no-op once done), then runs each
stage of `real/params.yaml` in the project root `real/` (its own corpus, models and metrics:
real/metrics/*.json), then the closed loop with the fine-tuned real model as champion (`lmops --root real
scenario`: real/metrics/drift.json), and prints a table of wall times, also written to
real/metrics/wall_times.json.
A stage that fails is reported and the next one still runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "real"
STAGES = ["data", "train", "evaluate", "quantize", "long_context", "prompts", "scenario"]  # prompts: the served prompt


def main(argv: list[str]) -> int:
    stages = argv or STAGES
    lmops = [sys.executable, "-m", "lmops.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    out = PROFILE / "metrics" / "wall_times.json"
    times = json.loads(out.read_text()) if out.exists() and argv else {}  # a full run starts a fresh table
    runs = [("real_model", lmops + ["--root", str(ROOT), "stage", "real_model"])]
    runs += [(s, lmops + ["--root", str(PROFILE)] + (["scenario"] if s == "scenario" else ["stage", s])) for s in stages]
    for name, cmd in runs:
        start = time.perf_counter()
        rc = subprocess.run(cmd, env=env, cwd=ROOT).returncode
        times[name] = {"seconds": round(time.perf_counter() - start, 1), "ok": rc == 0}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(times, indent=2) + "\n")
    print("| stage | wall s | ok |\n|---|---:|---|")
    for name, t in times.items():
        print(f"| {name} | {t['seconds']:.1f} | {t['ok']} |")
    print(f"| total | {sum(t['seconds'] for t in times.values()):.1f} | |")
    return 0 if all(t["ok"] for t in times.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
