"""The closed loop for real, on loopback: `prefect server start`, a process worker running the
deployments, `lmops serve` with a tiny model, simulated traffic with drift injected. Asserts that the
drift event (not anything else) started the retraining, that the new version was promoted and is
served, and that in-distribution windows triggered nothing. Then a headless Chromium opens the
Prefect UI on the same database and finds the runs and artifacts (skipped without `chromium`:
`make ui-deps` installs it)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT, TINY

LOOP = {
    "serve": {"max_batch": 16},
    "simulate": {"fresh_entities": 8, "incident_share": 0.0, "max_tokens": 6},
    "drift": {"monitor": {"min_rows": 20, "thresholds": {"text": 0.5, "embedding": 2.0, "quality": 0.8, "latency": 1.0, "unknown": 0.1}},
              "retrain": {"steps": 30, "batch_size": 8, "context": 96, "lr": 0.01, "eval_items": 20,
                          "gate_metric": "new_answer_logprob", "tolerance": 1.0, "threads": 1},
              "scenario": {"window_requests": 100, "reference_requests": 100, "clean_windows": 2, "drift_windows": 2,
                           "topic_shift": 1.0, "concurrency": 8, "timeout_s": 240}},
}


@pytest.fixture(scope="module")
def loop(tiny_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    shutil.copytree(tiny_root / "data", root / "data")
    shutil.copytree(tiny_root / "models" / "base", root / "models" / "base")
    (root / "params.yaml").write_text(yaml.safe_dump({**TINY, **LOOP}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run([sys.executable, "-m", "deployments.scenario", "--root", str(root)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=540)
    logs = root / ".lmops/drift-scenario/.lmops/logs"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + "".join(
        f"\n--- {p.name}\n{p.read_text()[-2000:]}" for p in logs.glob("*.log"))
    return root, json.loads((root / "metrics" / "drift.json").read_text())


def test_drift_event_triggers_retraining_and_promotion(loop):
    root, m = loop
    clean = [w for w in m["windows"] if not w["injected_drift"]]
    drifted = [w for w in m["windows"] if w["injected_drift"]]
    assert len(clean) == 2 and not any(w["drift_detected"] for w in clean), "in-distribution traffic triggered"
    assert m["false_alarms"] == 0
    assert drifted[0]["drift_detected"] and m["detection_delay_windows"] == 0
    assert m["drift_events"] == 1, "the cooldown should make one drift burst one event"
    assert m["retrain_runs"] == 1 and m["retrain_states"] == ["COMPLETED"]
    assert m["event_to_retrain_start_s"] is not None and m["event_to_retrain_start_s"] < 60
    assert m["promoted"] and m["promoted"] != m["champion_before"]
    assert m["served_version_after"] == m["promoted"], "the server did not hot-reload the new champion"
    assert m["gate"]["variant"] == "w8" and m["gate"]["full_metrics"], "the served champion is not the quantized variant"
    # The tiny model's 96-token context rejects long open-book prompts with a 400 (by design);
    # nothing may fail on the server side.
    assert m["server_errors"] == 0
    reports = list((root / ".lmops/drift-scenario/.lmops/monitor/reports").glob("*.html"))
    assert len(reports) == 4
    snapshot = list((root / ".lmops/drift-scenario/data/retrain").glob("*.dvc"))
    assert snapshot, "the retraining dataset was not versioned with DVC"


def test_prefect_ui_shows_the_runs_and_artifacts(loop):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium is not installed: `make ui-deps` installs Debian's chromium for this test")
    from deployments.up import Stack

    root, _ = loop
    stack = Stack(root / ".lmops/drift-scenario")  # the scenario's Prefect database, served again
    try:
        stack.start_prefect()
        ui = stack.api.removesuffix("/api")
        pages = {}
        for page in ("runs", "artifacts"):
            proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
                                   "--dump-dom", f"{ui}/{page}"], capture_output=True, text=True, timeout=120)
            pages[page] = proc.stdout
        assert "lmops-retrain" in pages["runs"] and "lmops-monitor" in pages["runs"], pages["runs"][-2000:]
        assert "drift-scores" in pages["artifacts"] and "lmops-retrain" in pages["artifacts"], pages["artifacts"][-2000:]
    finally:
        stack.stop()
