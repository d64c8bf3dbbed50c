"""Drift reports that travel: every judged window's Evidently snapshot goes into an Evidently workspace
(`evidently.ui.workspace.Workspace`: projects holding snapshots as JSON files), so `evidently ui
--workspace ...` shows the whole history from any machine.

The workspace is a directory or an fsspec URI (`s3://bucket/prefix`, `gs://...`): Evidently opens every
path through fsspec, so snapshots are written to object storage directly. Storage options (endpoint,
region) go through fsspec's per-protocol config for the duration of each call; credentials only ever
come from the environment (AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS, ...), as for DVC.
The link the monitor publishes is the snapshot's page in the Evidently UI (`lmops up` starts it on
`drift.monitor.ui_url`): http, never a file:// path a browser will not open from the Prefect UI.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

PROJECT = "lmops-drift"  # the Evidently project every window of one lmops project lands in


@dataclass(frozen=True)
class SavedReport:
    workspace: str
    project_id: str
    snapshot_id: str

    def url(self, ui_url: str) -> str:
        """The snapshot's page in the Evidently UI served from `ui_url` (the same route Evidently's own
        RemoteWorkspace links to)."""
        return f"{ui_url.rstrip('/')}/projects/{self.project_id}/reports/{self.snapshot_id}"


def location(workspace: str, root: str | Path = ".") -> str:
    """A URI as it is; a relative directory under the project `root`."""
    return workspace if "://" in workspace else str((Path(root) / workspace).resolve())


@contextlib.contextmanager
def _options(uri: str, options: dict | None):
    """fsspec's defaults for the URI's protocol extended by `options`, for the duration."""
    protocol = uri.split("://", 1)[0] if "://" in uri else ""
    if not protocol or not options:
        yield
        return
    import fsspec.config

    old = fsspec.config.conf.get(protocol)
    fsspec.config.conf[protocol] = {**(old or {}), **options}
    try:
        yield
    finally:
        if old is None:
            fsspec.config.conf.pop(protocol, None)
        else:
            fsspec.config.conf[protocol] = old


def _project(ws, name: str, create: bool):
    found = ws.search_project(name)
    if found:
        return found[0]
    if not create:
        return None
    from evidently.sdk.models import ProjectModel

    return ws.add_project(ProjectModel(name=name, description="lmops drift monitor: one snapshot per window"))


def save_snapshot(snapshot, uri: str, name: str, options: dict | None = None, project: str = PROJECT) -> SavedReport:
    """Add one report run (an Evidently `Snapshot`) named `name` to `project` of the workspace at `uri`."""
    from evidently.ui.workspace import Workspace

    with _options(uri, options):
        ws = Workspace(uri)
        proj = _project(ws, project, create=True)
        ref = ws.add_run(proj.id, snapshot, name=name)
    return SavedReport(uri, str(proj.id), str(ref.id))


def list_snapshots(uri: str, options: dict | None = None, project: str = PROJECT) -> list[dict]:
    """Every saved window of `project`: id, name and timestamp, oldest first (what the UI lists)."""
    from evidently.ui.workspace import Workspace

    with _options(uri, options):
        ws = Workspace(uri)
        proj = _project(ws, project, create=False)
        if proj is None:
            return []
        rows = []
        for sid in ws.list_runs(proj.id):
            snap = ws.get_run(proj.id, sid)
            rows.append({"id": str(sid), "name": getattr(snap, "name", None), "timestamp": snap.timestamp,
                         "project_id": str(proj.id)})
    return sorted(rows, key=lambda r: r["timestamp"])


def fsspec_env(uri: str, options: dict | None) -> dict[str, str]:
    """The environment that gives a child process (`evidently ui --workspace URI`) the same storage
    options: fsspec reads `FSSPEC_<PROTOCOL>` (a JSON dict) at import."""
    import json

    if "://" not in uri or not options:
        return {}
    return {f"FSSPEC_{uri.split('://', 1)[0].upper()}": json.dumps(options)}
