"""`lmops-scenario`: the closed loop, played on loopback in a sandbox project, as a Prefect flow.

In-distribution windows, then a topic shift, sent over HTTP to `lmops serve`; each window judged by
the `lmops-monitor` flow (a subflow); the drift event starts `lmops-retrain` through its deployment
trigger on a process worker; the gate promotes; the server hot-reloads. Writes `metrics/drift.json`.

It runs against the Prefect server its own run reports to: the user's (PREFECT_API_URL) or, without
one, Prefect's temporary server; it never starts a Prefect server. Around the loop it starts, and
stops, a process worker on its own work pool and the model server for the sandbox
(`.lmops/drift-scenario`: its own git + DVC repo, registry and logs). The retraining deployment and
its trigger come from `deployments/prefect.yaml` (`on-drift`), deployed as `lmops-retrain/scenario`
on the pool `lmops-scenario`, matching only this sandbox's events, and deleted afterwards.
Run: `lmops scenario` (or `lmops run`, which plays it after the DVC stages).
"""
from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow
from prefect.logging import get_run_logger

from lmops.io import InputError
from lmops.layout import BASE_MODEL, CORPUS, SCENARIO_SANDBOX
from tasks.params import validate_params
from tasks.scenario import prepare_sandbox, send_window, served_version, summarize, wait_for_retrain

POOL = "lmops-scenario"  # never the production pool: the user's workers do not pick the sandbox's runs
DEPLOYMENT = "scenario"  # lmops-retrain/scenario
RESOURCE = "lmops.scenario"  # drift events of the sandbox: lmops.scenario.<sandbox>, not lmops.monitor.*


def api_url() -> str:
    """The API this flow run reports to (the temporary server's address when none is configured)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url)


def deploy_retrain(ws: Path) -> str:
    """The spec's `on-drift` deployment for the sandbox: its own name, pool and event match."""
    from prefect import flow as prefect_flow

    from deployments.spec import CODE, deploy_kwargs, entry, triggers

    dep = entry("on-drift")
    match = {"prefect.resource.id": f"{RESOURCE}.{ws.name}"}
    remote = prefect_flow.from_source(source=str(CODE), entrypoint=dep["entrypoint"])
    return str(remote.deploy(work_pool_name=POOL, build=False, push=False, print_next_steps=False,
                             **deploy_kwargs(dep, str(ws), name=DEPLOYMENT,
                                             triggers=triggers(dep, {"project": str(ws)}, match))))


def remove_deployment(deployment_id: str) -> None:
    """Delete the sandbox's deployment and its trigger (its runs stay in the UI)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.delete_resource_owned_automations(f"prefect.deployment.{deployment_id}")
        client.delete_deployment(deployment_id)


@flow(name="lmops-scenario", log_prints=True)
def scenario(project: str = ".", params: str = "params.yaml") -> dict:
    """`params`: the params file (relative to `project`) the sandbox is built from."""
    from deployments.up import Stack, free_port
    from flows.monitor import monitor
    from lmops.data import Corpus
    from lmops.params import load_params
    from lmops.serve.simulate import Traffic

    root = Path(project).resolve()
    validate_params(project, params)
    if not (root / BASE_MODEL / "config.json").exists():
        raise InputError(f"{root / BASE_MODEL} is missing: the scenario serves the trained base model")
    ws = root / SCENARIO_SANDBOX
    port = free_port()
    t_start = time.monotonic()
    info = prepare_sandbox(str(root), str(ws), port, params)
    p = load_params(ws / "params.yaml")
    sc = p.drift.scenario
    stack = Stack(ws, api_url=api_url())
    deployment_id = None
    try:
        stack.start_worker(POOL)
        deployment_id = deploy_retrain(ws)
        url = stack.start_model_server(port)
        print(f"worker and model server up in {time.monotonic() - t_start:.0f} s: Prefect {stack.api}, model {url}")
        traffic, flush = Traffic(p.simulate, Corpus.load(ws / CORPUS)), p.serve.log_flush_seconds
        index, windows, events = 0, [], []
        t0, t1, sent = send_window(traffic, url, sc.reference_requests, index, sc.concurrency, flush)
        index += sc.reference_requests
        monitor(project=str(ws), start=t0, end=t1, event_resource=RESOURCE)  # the first window: the reference
        for w in range(sc.clean_windows + sc.drift_windows):
            t0, t1, sent = send_window(traffic, url, sc.window_requests, index, sc.concurrency, flush)
            index += sc.window_requests
            out = monitor(project=str(ws), start=t0, end=t1, event_resource=RESOURCE)
            drifted = w >= sc.clean_windows
            windows.append({"index": w, "injected": drifted, "drift_detected": out.get("drift_detected", False),
                            "failed": out.get("failed", []), "failed_requests": sum(sent.failed.values()),
                            "server_errors": sum(not e.startswith("4") for e in sent.errors)})
            if out.get("event_id"):
                events.append({"window": w, "id": out["event_id"], "at": datetime.now(UTC)})
            print(f"window {w} ({'drift' if drifted else 'clean'}): detected={windows[-1]['drift_detected']} "
                  f"failed tests {windows[-1]['failed']}")
        runs = wait_for_retrain(deployment_id, len(events), sc.timeout_s) if events else []
        time.sleep(0 if not runs else 2 * p.serve.reload_seconds + 1)
        served = served_version(url)
        return summarize(str(ws), str(root), info, windows, events, runs, served, sc.clean_windows,
                         time.monotonic() - t_start)
    finally:
        if deployment_id:
            try:
                remove_deployment(deployment_id)
            except Exception as err:  # the server may be going away; the children must still stop
                get_run_logger().warning("could not delete the scenario deployment %s: %s", deployment_id, err)
        stack.stop()


if __name__ == "__main__":  # `python -m flows.scenario --root PROJECT` (what `lmops scenario` runs)
    import argparse
    import json
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the worker and model server stop too
    ap = argparse.ArgumentParser(prog="python -m flows.scenario", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".")
    print(json.dumps(scenario(project=str(Path(ap.parse_args().root).resolve())), indent=2, default=str))
