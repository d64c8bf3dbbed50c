"""Serve the spec's deployments (`deployments/prefect.yaml`: schedules and triggers included) from
this process, no work pool or worker needed: `python -m deployments.serve [--root PROJECT]`."""
from __future__ import annotations

import argparse
from pathlib import Path

from deployments.spec import deploy_kwargs, entries, load_flow


def deployments(project: str | Path = ".") -> list:
    project = str(Path(project).resolve())
    return [load_flow(dep["entrypoint"]).to_deployment(**deploy_kwargs(dep, project)) for dep in entries()]


if __name__ == "__main__":
    from prefect import serve

    ap = argparse.ArgumentParser(prog="python -m deployments.serve", description=__doc__)
    ap.add_argument("--root", default=".", help="the project the flows work on")
    serve(*deployments(ap.parse_args().root))
