"""Headless-Chromium screenshots of what a Prefect and DVC user sees (issue 13's evidence):

1. `scheduled-run.png`: a deployment served with a 5 s interval against a real `prefect server start`;
   a flow run the scheduler created (auto_scheduled), in the Prefect UI;
2. `live-logs.png`: the `repro-train` task run of `lmops-pipeline` while it runs, its log streaming
   the stage's output line by line (a tiny project from tests/project.py, more training steps);
3. `progress-artifact.png`: that stage's progress artifact (`progress-train`), while it runs;
4. `dvc-plots.png`: `dvc plots show` of this project, loaded with every network name unresolvable
   (offline): every plot drawn. Also writes docs/plots-passkey.png (the README's image) with vl-convert.

    python benchmarks/screenshots.py [--out docs/screenshots] [--project .]

Needs Debian's chromium (`make ui-deps`). Everything runs on loopback."""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]

TICK = '''
from prefect import flow


@flow(name="lmops-tick", log_prints=True)
def tick() -> int:
    print("tick: a run the scheduler created")
    return 1


if __name__ == "__main__":
    tick.serve(name="every-5s", interval=5)
'''


def shot(url: str, out: Path, size: str = "1400,900", budget_ms: int = 15000, offline: bool = False) -> Path:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("chromium is not installed: `make ui-deps`")
    with tempfile.TemporaryDirectory() as profile:
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                 f"--virtual-time-budget={budget_ms}", f"--screenshot={out}"]
        if offline:
            flags.append("--host-resolver-rules=MAP * ~NOTFOUND")  # no name resolves: a CDN could not load
        subprocess.run([chromium, *flags, url], capture_output=True, timeout=180)
    if not out.exists():
        raise RuntimeError(f"chromium wrote no screenshot of {url}")
    print(f"{out}: {url}")
    return out


def api_post(api: str, path: str, body: dict) -> list[dict]:
    r = httpx.post(f"{api}/{path}", json=body, timeout=30)
    r.raise_for_status()
    return r.json()


def scheduled_run(stack, work: Path, out: Path) -> None:
    (work / "tick.py").write_text(TICK)
    log = open(stack.logs / "tick.log", "ab")
    stack.procs["tick"] = subprocess.Popen([sys.executable, str(work / "tick.py")], cwd=work, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True,
                                           env={**stack.env, "PREFECT_RUNNER_POLL_FREQUENCY": "2"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        runs = api_post(stack.api, "flow_runs/filter", {"flows": {"name": {"any_": ["lmops-tick"]}}, "limit": 50,
                        "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}})
        done = [r for r in runs if r["auto_scheduled"] and r["state_type"] == "COMPLETED"]
        if len(done) >= 2:
            break
        time.sleep(2)
    else:
        raise RuntimeError("the scheduler created no completed run in 300 s")
    ui = stack.api.removesuffix("/api")
    shot(f"{ui}/deployments/deployment/{done[0]['deployment_id']}", out / "scheduled-deployment.png")
    shot(f"{ui}/runs/flow-run/{done[0]['id']}", out / "scheduled-run.png")
    stack.procs.pop("tick").terminate()


def live_pipeline(stack, work: Path, out: Path, finish: bool = False) -> Path | None:
    """Screenshots of the running train stage; with `finish`, wait for the run and return its project."""
    from tests.conftest import TINY
    from tests.project import make_project

    params = copy.deepcopy(TINY)
    params["train"]["steps"] = 1500  # long enough to watch it run
    project = make_project(work / "proj", params)
    env = {**stack.env, "LMOPS_PROGRESS_SECONDS": "2", "TQDM_MININTERVAL": "2", "LMOPS_LOG_CR_SECONDS": "2",
           "PYTHONPATH": str(ROOT) + os.pathsep + stack.env.get("PYTHONPATH", "")}
    code = ("from flows.pipeline import lmops_pipeline; "
            f"lmops_pipeline(project={str(project)!r}, push_data=False, scenario=False)")
    log = open(stack.logs / "pipeline.log", "ab")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    stack.procs["pipeline"] = proc
    ui = stack.api.removesuffix("/api")
    task_run, deadline = None, time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        runs = api_post(stack.api, "task_runs/filter", {"task_runs": {"name": {"any_": ["repro-train"]}}})
        running = [r for r in runs if r["state_type"] == "RUNNING"]
        if running:
            task_run = running[0]
            logs = api_post(stack.api, "logs/filter", {"logs": {"task_run_id": {"any_": [task_run["id"]]}}})
            arts = api_post(stack.api, "artifacts/filter", {"artifacts": {"key": {"any_": ["progress-train"]}}})
            if len(logs) >= 8 and arts and 10 < (arts[0].get("data") or 0) < 90:
                shot(f"{ui}/runs/task-run/{task_run['id']}", out / "live-logs.png", size="1400,1100")
                shot(f"{ui}/artifacts/artifact/{arts[0]['id']}", out / "progress-artifact.png")
                still = api_post(stack.api, "task_runs/filter", {"task_runs": {"id": {"any_": [task_run["id"]]}}})
                print(f"repro-train still {still[0]['state_type']} after the screenshots; {len(logs)} log lines")
                break
        time.sleep(1)
    else:
        raise RuntimeError(f"no running train stage with logs and progress seen; see {stack.logs / 'pipeline.log'}")
    if not finish:
        proc.terminate()
        return None
    if proc.wait(timeout=1800):
        raise RuntimeError(f"the pipeline failed; see {stack.logs / 'pipeline.log'}")
    return project


def plots_page(project: Path, out: Path, docs: Path | None) -> None:
    dvc = str(Path(sys.executable).parent / "dvc")
    with tempfile.TemporaryDirectory() as tmp:
        config = (project / ".dvc" / "config").read_text()
        template = [] if "html_template" in config else ["--html-template", str(ROOT / ".dvc/plots/offline.html")]
        subprocess.run([dvc, "plots", "show", *template, "-o", tmp], cwd=project, check=True, capture_output=True)
        shot(f"file://{tmp}/index.html", out / "dvc-plots.png", size="1300,2400", budget_ms=8000, offline=True)
    if docs is None:
        return
    import vl_convert

    plots = json.loads(subprocess.run([dvc, "plots", "show", "--json"], cwd=project, check=True,
                                      capture_output=True, text=True).stdout)["data"]
    spec = plots["Passkey accuracy, length x depth"][0]["content"]
    (docs / "plots-passkey.png").write_bytes(vl_convert.vegalite_to_png(spec, scale=1.0))
    print(f"{docs / 'plots-passkey.png'}: the README's plot")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    ap.add_argument("--project", default=str(ROOT), help="the project whose `dvc plots show` page is shot")
    ap.add_argument("--only", choices=["schedule", "pipeline", "plots"], action="append")
    ap.add_argument("--plots-from-run", action="store_true",
                    help="let the tiny pipeline run finish and shoot its `dvc plots show` page (every plot, the "
                    "image plots included) as dvc-plots.png")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    only = set(args.only or ["schedule", "pipeline", "plots"])
    if "plots" in only:  # the README's image from this project's plots
        plots_page(Path(args.project), out, ROOT / "docs")
    if only & {"schedule", "pipeline"}:
        from deployments.up import Stack

        with tempfile.TemporaryDirectory() as tmp:
            logs = Path(tempfile.mkdtemp(prefix="lmops-screenshots-logs-"))
            print(f"process logs in {logs}")
            (Path(tmp) / ".lmops" / "prefect").mkdir(parents=True)
            stack = Stack(tmp, logs=logs)
            try:
                stack.start_prefect(timeout=180)
                if "schedule" in only:
                    scheduled_run(stack, Path(tmp), out)
                if "pipeline" in only:
                    run = live_pipeline(stack, Path(tmp), out, finish=args.plots_from_run)
                    if run is not None:  # every plot, images included, of a whole pipeline run
                        plots_page(run, out, None)
            finally:
                stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
