"""The quantization grid and the long-context methods, fanned out: `lmops-grid` starts one
`lmops-grid-cell` flow run per scheme (or method) through a deployment, so every idle worker of its
work pool takes one; each cell runs in its own clone of the git repository (the deployment's
git-clone pull step), pulls its inputs with `dvc pull`, runs, and pushes its outputs to the DVC remote;
`lmops-grid` then merges the cells into one table and one frontier (lmops/fanout.py).

Deploy both with `deployments/fanout.py` (the repository URL is a parameter; nothing depends on a host
path). Cell results travel as Prefect results (persisted): keep the default local result storage on one
machine, point PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK (or `result_storage`) at an S3 block across machines."""
from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_client
from prefect.deployments import run_deployment
from prefect.logging import get_run_logger

from lmops import fanout
from lmops.io import write_text
from lmops.params import load_params
from tasks.fanout import run_cell, version_cell
from tasks.remote import pull_outputs

CELL_DEPLOYMENT = "lmops-grid-cell/grid-cell"
INPUTS = ["data/corpus", "models/base"]  # what every cell reads, restored with `dvc pull`


@flow(name="lmops-grid-cell", persist_result=True, log_prints=True, flow_run_name="{kind}-{item}")
def grid_cell(kind: str, item: str, project: str = ".", pull: bool = True, push: bool = True) -> dict:
    """One scheme or method, in this worker's clone (`project` "." = the clone's root)."""
    project = str(Path(project).resolve())
    if pull:
        pull_outputs(project, INPUTS)
    metrics = run_cell(kind, item, project)
    dvc_file = version_cell(kind, item, project, push=push)
    return {"kind": kind, "item": item, "metrics": metrics, "dvc": dvc_file}


@flow(name="lmops-grid", log_prints=True)
def grid(kind: str = "quantize", items: list[str] | None = None, project: str = ".",
         deployment: str = CELL_DEPLOYMENT, timeout_s: float = 6 * 3600) -> str:
    """Start one cell run per item (all at once: the pool's workers share them), wait for every one,
    merge. A failed cell fails the grid, naming it."""
    log = get_run_logger()
    root = Path(project).resolve()
    items = items or fanout.items(kind, load_params(root / "params.yaml"))
    runs = {it: run_deployment(deployment, parameters={"kind": kind, "item": it}, timeout=0) for it in items}
    log.info("started %d %s cells: %s", len(runs), kind, {it: str(r.id) for it, r in runs.items()})
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            states = {it: client.read_flow_run(r.id).state for it, r in runs.items()}
            if all(s is not None and s.is_final() for s in states.values()):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{kind} grid: cells still running after {timeout_s:.0f} s: "
                                   f"{[it for it, s in states.items() if not (s and s.is_final())]}")
            time.sleep(2)
    failed = [it for it, s in states.items() if not s.is_completed()]
    if failed:
        raise RuntimeError(f"{kind} grid: cells {failed} did not complete ({[states[i].name for i in failed]})")
    cells = {}
    for it, state in states.items():
        res = state.result()
        cells[it] = res["metrics"]
        write_text(root / (str(fanout.cell_dir(kind, it)) + ".dvc"), res["dvc"])  # `dvc pull` it to get the bytes
    table = fanout.merge(kind, cells, root)
    print(table)
    return table


if __name__ == "__main__":
    grid()
