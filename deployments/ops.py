"""Register the spec's deployments (`deployments/prefect.yaml`) on their process work pool, from
this checkout's source: what `lmops up` does, and `prefect deploy --all` does from the file itself.
The project each flow works on is made absolute, so the worker may run anywhere."""
from __future__ import annotations

from pathlib import Path

from deployments.spec import CODE, deploy_kwargs, entries, pool


def deploy_ops(project: str, names: list[str] | None = None) -> dict[str, str]:
    """Deploy the named deployments (default: every one in the spec); returns name -> deployment id."""
    from prefect import flow

    project = str(Path(project).resolve())
    ids = {}
    for dep in entries():
        if names is not None and dep["name"] not in names:
            continue
        remote = flow.from_source(source=str(CODE), entrypoint=dep["entrypoint"])
        ids[dep["name"]] = str(remote.deploy(work_pool_name=pool(dep), build=False, push=False, print_next_steps=False,
                                             **deploy_kwargs(dep, project)))
    return ids
