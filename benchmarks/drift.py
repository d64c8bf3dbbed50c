"""Drift targets, measured: `python benchmarks/drift.py [--root .] [--windows 20]`.

- detection: 30% topic shift, caught within 1 window of 500 requests after onset;
- false alarms: zero over 20 in-distribution windows of 500 requests;
  both from simulated logs answered in-process by the serving engine (no HTTP: minutes, not hours),
  judged by the same Evidently report and params as the monitoring flow;
- event -> retraining start < 60 s, and the retrained champion's closed-book KB QA on the drifted
  topic (+20 points): read from `metrics/drift.json`, which the `lmops-scenario` flow (the real
  loop on loopback) wrote in this project.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def judge_windows(root: Path, windows: int, size: int, shift: float) -> dict:
    import pandas as pd
    import torch

    from lmops.data import Corpus
    from lmops.layout import CORPUS
    from lmops.monitor.drift import run_report
    from lmops.monitor.features import window_features
    from lmops.monitor.offline import offline_rows
    from lmops.params import load_params
    from lmops.serve.engine import load

    torch.set_num_threads(2)
    p = load_params(root / "params.yaml")
    corpus = Corpus.load(root / CORPUS)
    loaded = load(root / "models/base", p.serve.model, "base")
    t0 = datetime.now(UTC)
    clean = p.simulate.model_copy(update={"seed": p.drift.scenario.seed})
    shifted = clean.model_copy(update={"topic": clean.topic.model_copy(update={"share": shift, "onset": 0})})

    def frame(sim, index, known):
        rows = pd.DataFrame(offline_rows(sim, corpus, loaded, index, size, t0))
        return window_features(rows, root / CORPUS, known if known is not None else rows["prompt"].tolist())

    started = time.perf_counter()
    reference = frame(clean, 0, None)
    known = reference["prompt"].tolist()
    results = {"clean": [], "shifted": []}
    for w in range(windows):
        r = run_report(reference, frame(clean, (w + 1) * size, known), p.drift.monitor)
        results["clean"].append({"drift": r.drift_detected, "failed": r.failed, "embedding": r.scores["embedding"]})
        print(f"clean window {w + 1}/{windows}: drift={r.drift_detected} {r.failed} embedding={r.scores['embedding']}",
              file=sys.stderr)
    r = run_report(reference, frame(shifted, (windows + 1) * size, known), p.drift.monitor)
    results["shifted"].append({"drift": r.drift_detected, "failed": r.failed, "embedding": r.scores["embedding"]})
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".")
    ap.add_argument("--windows", type=int, default=20)
    ap.add_argument("--size", type=int, default=500)
    ap.add_argument("--shift", type=float, default=0.3)
    args = ap.parse_args()
    root = Path(args.root).resolve()
    res = judge_windows(root, args.windows, args.size, args.shift)
    false_alarms = sum(w["drift"] for w in res["clean"])
    detected = res["shifted"][0]["drift"]
    loop = json.loads((root / "metrics/drift.json").read_text()) if (root / "metrics/drift.json").exists() else {}
    gate = loop.get("gate") or {}
    key = loop.get("gate_metric") or "new_qa"  # what the gate read (held-out items since issue 15)
    before = (gate.get("champion") or {}).get(key)
    after = (gate.get("challenger") or {}).get(key)
    gain = None if before is None or after is None else round(100 * (after - before), 1)
    latency = loop.get("event_to_retrain_start_s")
    rows = [
        (f"drift detected within 1 window of {args.size} after a {args.shift:.0%} topic shift", "yes", "yes" if detected else "no",
         detected, f"failed tests {res['shifted'][0]['failed']}"),
        ("false alarms over in-distribution windows", "0", f"{false_alarms}/{len(res['clean'])}", false_alarms == 0,
         f"max embedding score {max(w['embedding'] for w in res['clean']):.4f}"),
        ("drift event -> retraining start (s)", "< 60", latency, latency is not None and latency < 60,
         "from metrics/drift.json (the lmops-scenario flow's loop)"),
        (f"held-out new-topic QA ({key}), gain (points)", ">= 20", gain, gain is not None and gain >= 20,
         f"champion {before} -> challenger {after}; held-out items {(loop.get('heldout') or {}).get('items')}"),
    ]
    print("| target | wanted | measured | met | note |\n|---|---|---|---|---|")
    for name, want, got, ok, note in rows:
        print(f"| {name} | {want} | {got} | {'yes' if ok else 'NO'} | {note} |")
    print(f"\n{len(res['clean']) + 1} windows of {args.size} judged in {res['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
