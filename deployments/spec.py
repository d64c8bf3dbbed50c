"""`deployments/prefect.yaml` is the one deployment spec: names, entrypoints, schedules, triggers,
work pool, parameters. `prefect deploy` reads it directly; `lmops up` (deployments/ops.py),
`python -m deployments.serve` and the scenario flow read it through this module, so nothing here
restates a name, an interval or a trigger."""
from __future__ import annotations

import copy
import importlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

CODE = Path(__file__).resolve().parent.parent  # the flows' source (`project` may be another directory)
SPEC = Path(__file__).resolve().parent / "prefect.yaml"


def load_spec(path: Path = SPEC) -> dict:
    return yaml.safe_load(path.read_text())


def entries(path: Path = SPEC) -> list[dict]:
    return load_spec(path)["deployments"]


def entry(name: str, path: Path = SPEC) -> dict:
    for dep in entries(path):
        if dep["name"] == name:
            return copy.deepcopy(dep)
    raise KeyError(f"no deployment named {name!r} in {path}")


def pool(dep: dict) -> str:
    return dep["work_pool"]["name"]


def load_flow(entrypoint: str):
    """`flows/monitor.py:monitor` -> the flow object, imported as a module of this package."""
    path, func = entrypoint.split(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), func)


def schedules(dep: dict) -> list:
    """The spec's `schedules` as Prefect schedule objects (cron with timezone, or interval in seconds)."""
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    out = []
    for s in dep.get("schedules") or []:
        if "cron" in s:
            out.append(CronSchedule(cron=s["cron"], timezone=s.get("timezone")))
        elif "interval" in s:
            out.append(IntervalSchedule(interval=timedelta(seconds=float(s["interval"]))))
        else:
            raise ValueError(f"deployment {dep['name']}: unsupported schedule {s} (cron or interval)")
    return out


def interval_seconds(name: str) -> float | None:
    """The interval of a deployment's first interval schedule (the monitoring interval lives only there)."""
    return next((float(s["interval"]) for s in entry(name).get("schedules") or [] if "interval" in s), None)


def triggers(dep: dict, parameters: dict | None = None, match: dict | None = None) -> list:
    """The spec's `triggers` as DeploymentTrigger objects; `parameters` are merged into each trigger's
    run parameters (e.g. the absolute project), `match` replaces its resource match."""
    from prefect.events.schemas.deployment_triggers import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    out = []
    for i, t in enumerate(copy.deepcopy(dep.get("triggers") or []), start=1):
        t.setdefault("name", f"{dep['name']}__automation_{i}")
        if parameters:
            t["parameters"] = {**parameters, **(t.get("parameters") or {})}
        if match is not None:
            t["match"] = match
        out.append(TypeAdapter(DeploymentTriggerTypes).validate_python(t))
    return out


def deploy_kwargs(dep: dict, project: str | None = None, **overrides: Any) -> dict:
    """Keyword arguments for `flow.deploy`/`flow.to_deployment`, from the spec (project made absolute)."""
    params = dict(dep.get("parameters") or {})
    extra = {"project": project} if project else {}
    params.update(extra)
    kw = {"name": dep["name"], "description": dep.get("description"), "parameters": params,
          "schedules": schedules(dep), "triggers": triggers(dep, extra),
          "concurrency_limit": dep.get("concurrency_limit")}
    kw.update(overrides)
    return kw
