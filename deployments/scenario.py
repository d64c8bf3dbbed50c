"""The `drift` stage's scenario: the closed loop, on loopback, in a sandbox project.

In-distribution windows, then a topic shift, sent over HTTP to `lmops serve`; each window judged by
the `lmops-monitor` flow; the drift event starts `lmops-retrain` through its deployment trigger on a
process worker; the gate promotes; the server hot-reloads. Writes `<root>/metrics/drift.json`.

The sandbox (`<root>/.lmops/drift-scenario`) is its own git + DVC project with its own registry, logs
and Prefect database, so the demonstration never tags or locks the project that runs it.
Run: `python -m deployments.scenario --root .` (what `lmops stage drift` does).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from deployments.up import LOOPBACK, Stack, deploy, free_port

SANDBOX = Path(".lmops/drift-scenario")


def _git(ws: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(ws), *args], check=True, capture_output=True)


def prepare_sandbox(root: Path, ws: Path, port: int) -> dict:
    """A fresh project: params (model server on `port`), the corpus, the champion registered."""
    from lmops.io import read_json
    from lmops.params import load_params
    from lmops.registry import Lineage, Registry, dir_hash

    if ws.exists():
        shutil.rmtree(ws)
    ws.mkdir(parents=True)
    raw = yaml.safe_load((root / "params.yaml").read_text())
    sc = load_params(root / "params.yaml").drift.scenario
    raw.setdefault("serve", {}).update({"port": port, "host": LOOPBACK, "reload_seconds": 2.0,
                                        "fallback_dir": str((root / "models/base").resolve())})
    onset = sc.reference_requests + sc.clean_windows * sc.window_requests
    raw.setdefault("simulate", {}).update({"url": f"http://{LOOPBACK}:{port}", "topic": {"share": sc.topic_shift, "onset": onset},
                                           "seed": sc.seed})
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    shutil.copytree(root / "data/corpus", ws / "data/corpus")
    registry = load_params(root / "params.yaml").prompts.registry  # the served production prompt
    if not Path(registry).is_absolute() and (root / registry).is_file():
        (ws / registry).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / registry, ws / registry)
    (ws / ".gitignore").write_text("/data/corpus\n/models\n/logs\n/metrics\n/.lmops\n")
    _git(ws, "init", "-q")
    _git(ws, "-c", "user.name=lmops", "-c", "user.email=lmops@localhost", "add", ".")
    subprocess.run(["dvc", "init", "-q"], cwd=ws, check=True, capture_output=True)
    _git(ws, "-c", "user.name=lmops", "-c", "user.email=lmops@localhost", "commit", "-qam", "drift scenario sandbox")
    p = load_params(ws / "params.yaml")
    metrics = read_json(root / "metrics/base.json") if (root / "metrics/base.json").exists() else {}
    registry = Registry(ws, p.serve.registry_store)
    v = registry.register(p.serve.model, root / "models/base",
                          Lineage(data_hash=dir_hash(root / "data/corpus"), params=p.train.model_dump(mode="json"),
                                  metrics=metrics))
    registry.promote(p.serve.model, v.version, "champion", message="drift scenario: the base model")
    return {"champion": v.version, "onset": onset}


def retrain_runs(deployment_id: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


def wait_for_retrain(deployment_id: str, expect: int, timeout: float) -> list:
    """Wait until `expect` runs of the retraining deployment exist and all are final."""
    deadline = time.monotonic() + timeout
    runs: list = []
    while time.monotonic() < deadline:
        runs = retrain_runs(deployment_id)
        if len(runs) >= expect and all(r.state and r.state.is_final() for r in runs):
            return runs
        time.sleep(2)
    print(f"timed out after {timeout:.0f} s waiting for the retraining run(s): "
          f"{[(r.name, r.state.type if r.state else None) for r in runs]}", file=sys.stderr)
    return runs


def send_window(traffic, url: str, n: int, start_index: int, concurrency: int, flush_s: float):
    from lmops.serve.simulate import send

    t0 = datetime.now(UTC)
    result = send(traffic, url, n, concurrency, start_index=start_index)
    time.sleep(flush_s + 1.0)  # the server's log writer flushes every `log_flush_seconds`
    return t0, datetime.now(UTC), result


def run(root: Path) -> dict:
    root = root.resolve()
    ws = root / SANDBOX
    port = free_port()
    info = prepare_sandbox(root, ws, port)
    stack = Stack(ws)
    os.environ.update({k: stack.env[k] for k in ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED")})
    from deployments.ops import POOL
    from lmops.data import Corpus
    from lmops.params import load_params
    from lmops.serve.simulate import Traffic

    p = load_params(ws / "params.yaml")
    sc = p.drift.scenario
    t_start = time.monotonic()
    try:
        stack.start_prefect()
        stack.start_worker(POOL)
        ids = deploy(stack, ws, monitor_schedule=False)
        url = stack.start_model_server(port)
        print(f"stack up in {time.monotonic() - t_start:.0f} s: Prefect {stack.api}, model server {url}")
        from flows.monitor import monitor  # after PREFECT_API_URL is set: runs report to the stack's server

        traffic, flush = Traffic(p.simulate, Corpus.load(ws / "data/corpus")), p.serve.log_flush_seconds
        index, windows, events = 0, [], []
        t0, t1, sent = send_window(traffic, url, sc.reference_requests, index, sc.concurrency, flush)
        index += sc.reference_requests
        monitor(project=str(ws), start=t0, end=t1)  # the first window becomes the reference
        for w in range(sc.clean_windows + sc.drift_windows):
            t0, t1, sent = send_window(traffic, url, sc.window_requests, index, sc.concurrency, flush)
            index += sc.window_requests
            out = monitor(project=str(ws), start=t0, end=t1)
            drifted = w >= sc.clean_windows
            windows.append({"index": w, "injected": drifted, "drift_detected": out.get("drift_detected", False),
                            "failed": out.get("failed", []), "failed_requests": sum(sent.failed.values()),
                            "server_errors": sum(not e.startswith("4") for e in sent.errors)})
            if out.get("event_id"):
                events.append({"window": w, "id": out["event_id"], "at": datetime.now(UTC)})
            print(f"window {w} ({'drift' if drifted else 'clean'}): detected={windows[-1]['drift_detected']} "
                  f"failed tests {windows[-1]['failed']}")
        runs = wait_for_retrain(ids["retrain"], len(events), sc.timeout_s) if events else []
        time.sleep(0 if not runs else 2 * p.serve.reload_seconds + 1)
        served = _served_version(url)
        return summarize(ws, root, info, windows, events, runs, served, sc.clean_windows, time.monotonic() - t_start)
    finally:
        stack.stop()


def _served_version(url: str) -> str | None:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=5).json().get("version")
    except Exception:  # the summary says None: the server did not answer
        return None


def summarize(ws: Path, root: Path, info: dict, windows: list, events: list, runs: list, served: str | None,
              onset_window: int, seconds: float) -> dict:
    from lmops.io import read_json, write_json

    metrics = read_json(ws / "metrics/drift.json") if (ws / "metrics/drift.json").exists() else {"windows": []}
    records = [read_json(f) for f in sorted((ws / ".lmops/retrain").glob("*.json"))]
    promoted = next((r["version"] for r in records if r["promoted"]), None)
    flagged = [w["index"] for w in windows if w["drift_detected"] and w["injected"]]
    start_delays = []
    for ev in events:
        starts = [r.start_time for r in runs if r.start_time]
        if starts:
            start_delays.append(round((min(starts) - ev["at"]).total_seconds(), 1))
    rec = records[0] if records else {}
    out = {
        "windows": [{"start": m["start"], "end": m["end"], "drift_detected": m["drift_detected"],
                     "injected_drift": w["injected"], "scores": m["scores"]}
                    for m, w in zip(metrics["windows"], windows)],
        "retrain_runs": len(runs),
        "promoted": promoted,
        "false_alarms": sum(w["drift_detected"] for w in windows if not w["injected"]),
        "detection_delay_windows": (flagged[0] - onset_window) if flagged else None,
        "drift_events": len(events),
        "event_to_retrain_start_s": start_delays[0] if start_delays else None,
        "retrain_states": [r.state.type.value if r.state else None for r in runs],
        "champion_before": info["champion"],
        "served_version_after": served,
        # challenger = the served (quantized) variant the gate read; full_metrics = before quantization
        "gate": {k: rec.get(k) for k in ("reason", "champion", "challenger", "variant", "full_metrics")} if rec else None,
        "failed_requests": sum(w["failed_requests"] for w in windows),  # 4xx included (e.g. prompt too long)
        "server_errors": sum(w["server_errors"] for w in windows),  # 5xx and transport errors
        "scenario_seconds": round(seconds, 1),
    }
    write_json(root / "metrics/drift.json", out)
    return out


def main(argv: list[str] | None = None) -> int:
    # SIGTERM (a timeout, `kill PID`) unwinds like Ctrl-C, so the stack's children are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(prog="python -m deployments.scenario", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".")
    args = ap.parse_args(argv)
    print(json.dumps(run(Path(args.root)), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
