"""The operations deployments on a process work pool: monitoring on a schedule, and retraining
started by the drift event. `deploy_ops()` registers both with the Prefect server in PREFECT_API_URL."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

from lmops.params import Params
from tasks.monitor import DRIFT_EVENT

POOL = "lmops-process"
CODE = Path(__file__).resolve().parent.parent  # the flows' source; `project` may be another directory


def drift_trigger(project: str) -> DeploymentEventTrigger:
    """Run the retraining with the drifted window and scores of the event that fired it.
    Single-expression templates keep their JSON type (dicts stay dicts)."""
    return DeploymentEventTrigger(
        name="retrain-on-drift", description="lmops.drift.detected -> lmops-retrain",
        expect={DRIFT_EVENT}, match={"prefect.resource.id": "lmops.monitor.*"},
        parameters={"project": project, "window": "{{ event.payload.window }}",
                    "scores": "{{ event.payload.scores }}", "event_id": "{{ event.id | string }}"})


def deploy_ops(project: str, p: Params, monitor_schedule: bool = True) -> dict[str, str]:
    """Deploy `lmops-monitor/monitor` (every `drift.monitor.interval_minutes`) and
    `lmops-retrain/on-drift` (event-triggered, one run at a time) from the project's source."""
    from prefect import flow

    project = str(Path(project).resolve())
    ids = {}
    monitor = flow.from_source(source=str(CODE), entrypoint="flows/monitor.py:monitor")
    ids["monitor"] = str(monitor.deploy(
        name="monitor", work_pool_name=POOL, build=False, push=False, print_next_steps=False,
        interval=timedelta(minutes=p.drift.monitor.interval_minutes) if monitor_schedule else None,
        parameters={"project": project, "log_dir": p.serve.log_dir}))
    retrain = flow.from_source(source=str(CODE), entrypoint="flows/retrain.py:retrain")
    ids["retrain"] = str(retrain.deploy(
        name="on-drift", work_pool_name=POOL, build=False, push=False, print_next_steps=False,
        triggers=[drift_trigger(project)], concurrency_limit=1, parameters={"project": project}))
    return ids
