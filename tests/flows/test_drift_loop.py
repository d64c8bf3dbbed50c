"""The closed loop for real, on loopback: the `lmops-scenario` flow against a Prefect server that is
already running (`prefect server start`, standing in for the user's PREFECT_API_URL), a process worker
running the retraining deployment, `lmops serve` with a tiny model, simulated traffic with drift.
Asserts that the drift event (not anything else) started the retraining, that the new version was
promoted and is served, that in-distribution windows triggered nothing, and that every run landed in
that server (the scenario starts none of its own). Then a headless Chromium opens that server's UI
and finds the runs and artifacts (skipped without `chromium`: `make ui-deps` installs it)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import httpx
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
def server(tmp_path_factory):
    """The user's Prefect server: started before the scenario, outliving it."""
    from deployments.up import Stack

    stack = Stack(tmp_path_factory.mktemp("user-prefect"))
    try:
        stack.start_prefect()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def loop(tiny_root, tmp_path_factory, server):
    root = tmp_path_factory.mktemp("loop")
    shutil.copytree(tiny_root / "data", root / "data")
    shutil.copytree(tiny_root / "models" / "base", root / "models" / "base")
    (root / "params.yaml").write_text(yaml.safe_dump({**TINY, **LOOP}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": server.api}
    proc = subprocess.run([sys.executable, "-m", "flows.scenario", "--root", str(root)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=540)
    logs = root / ".lmops/drift-scenario/.lmops/logs"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + "".join(
        f"\n--- {p.name}\n{p.read_text()[-2000:]}" for p in logs.glob("*.log"))
    return root, json.loads((root / "metrics" / "drift.json").read_text())


def _api(server, path: str, body: dict) -> list:
    resp = httpx.post(f"{server.api}/{path}", json=body, timeout=10)
    resp.raise_for_status()
    return resp.json()


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
    sandbox = root / ".lmops/drift-scenario"
    reports = list((sandbox / ".lmops/monitor/reports").glob("*.html"))
    assert len(reports) == 4
    snapshot = list((sandbox / "data/retrain").glob("*.dvc"))
    assert snapshot, "the retraining dataset was not versioned with DVC"
    # The monitor keeps its windows as its own state; only the scenario's summary is a metric.
    assert len(json.loads((sandbox / ".lmops/monitor/windows.json").read_text())["windows"]) == 4
    assert not (sandbox / "metrics").exists() and [p.name for p in (root / "metrics").iterdir()] == ["drift.json"]


def test_registered_versions_come_back_through_dvc_artifacts_get(loop, tmp_path):
    """The sandbox's registry is read by DVC's own command: `--rev vX.Y.Z` and `--stage champion` return
    that version's bytes (by hash), not the sandbox's working-tree model."""
    from lmops.registry import dir_hash

    root, m = loop
    sandbox = root / ".lmops/drift-scenario"
    dvc = os.path.join(os.path.dirname(sys.executable), "dvc")
    for how, out in ((["--rev", m["promoted"]], tmp_path / "rev"), (["--stage", "champion"], tmp_path / "champion")):
        proc = subprocess.run([dvc, "artifacts", "get", ".", "lmops-model", *how, "-o", str(out)], cwd=sandbox,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        expected = json.loads(subprocess.run(["git", "tag", "-l", "--format=%(contents)", f"lmops-model@{m['promoted']}"],
                                             cwd=sandbox, capture_output=True, text=True).stdout)["model_hash"]
        assert dir_hash(out) == expected, how


def test_runs_land_in_the_configured_server(loop, server):
    root, m = loop
    sandbox = root / ".lmops/drift-scenario"
    assert not (sandbox / ".lmops/prefect").exists() and not list(sandbox.glob(".lmops/logs/prefect-server*")), \
        "the scenario started a Prefect server of its own"
    runs = _api(server, "flow_runs/filter", {"limit": 200})
    by_flow = {}
    flows = {f["id"]: f["name"] for f in _api(server, "flows/filter", {})}
    for r in runs:
        by_flow.setdefault(flows[r["flow_id"]], []).append(r["state_type"])
    assert by_flow.get("lmops-scenario") == ["COMPLETED"], by_flow
    assert by_flow.get("lmops-monitor", []).count("COMPLETED") == 5, by_flow  # the reference + 4 windows
    assert by_flow.get("lmops-retrain") == ["COMPLETED"], by_flow
    # Its retraining deployment (and trigger) was removed; the production spec was never deployed.
    assert not _api(server, "deployments/filter", {}), "the scenario left a deployment behind"


def test_prefect_ui_shows_the_runs_and_artifacts(loop, server):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium is not installed: `make ui-deps` installs Debian's chromium for this test")
    ui = server.api.removesuffix("/api")

    def dom(path: str) -> str:
        proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
                               "--dump-dom", f"{ui}/{path}"], capture_output=True, text=True, timeout=120)
        return proc.stdout

    runs = dom("runs")
    assert "lmops-retrain" in runs and "lmops-monitor" in runs, runs[-2000:]
    # The artifacts index draws its cards in a virtual scroller that headless Chromium may leave empty;
    # it states the count, and each key's own page shows that artifact.
    keys = sorted({a["key"] for a in _api(server, "artifacts/filter", {}) if a.get("key")})
    assert {"drift-scores", "drift-report", "lmops-retrain"} <= set(keys), keys
    assert f"{len(keys)} Artifacts" in dom("artifacts")
    for key in ("drift-scores", "lmops-retrain"):
        page = dom(f"artifacts/key/{key}")
        assert key in page, page[-2000:]
