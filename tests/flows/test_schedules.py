"""Schedules fire on their own: a deployment served with a 5 s interval against a real `prefect server
start` (the scheduler service runs there; the `prefect_server` test harness runs no scheduler) gets
runs created by the scheduler, and they complete. With SQLAlchemy 2.1 Prefect 3.8.8's scheduler fails
every loop ("Can't evaluate bulk DML statement") and no run is ever created: requirements.lock pins 2.0."""
from __future__ import annotations

import subprocess
import sys
import time

FLOW = '''
from prefect import flow


@flow(name="lmops-tick")
def tick() -> int:
    return 1


if __name__ == "__main__":
    tick.serve(name="every-5s", interval=5)
'''


def test_scheduler_creates_runs_that_complete(tmp_path):
    from deployments.up import Stack

    stack = Stack(tmp_path)  # its own database under tmp_path/.lmops/prefect
    (tmp_path / "tick.py").write_text(FLOW)
    try:
        stack.start_prefect(timeout=120)
        server = stack.procs["prefect-server"]
        out = open(stack.logs / "serve.log", "ab")
        serve = subprocess.Popen([sys.executable, str(tmp_path / "tick.py")], cwd=tmp_path, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 env={**stack.env, "PREFECT_RUNNER_POLL_FREQUENCY": "2"})
        stack.procs["serve"] = serve
        runs, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline:
            assert serve.poll() is None and server.poll() is None, (stack.logs / "serve.log").read_text()[-3000:]
            runs = _runs(stack.api)
            if sum(r["state_type"] == "COMPLETED" for r in runs) >= 2:
                break
            time.sleep(2)
        log = (stack.logs / "prefect-server.log").read_text()
        assert runs, f"the scheduler created no run in 60 s; server log:\n{log[-3000:]}"
        assert all(r["auto_scheduled"] for r in runs), "runs must come from the scheduler, not from a client"
        done = [r for r in runs if r["state_type"] == "COMPLETED"]
        assert len(done) >= 2, f"{len(runs)} scheduled runs, {len(done)} completed: {runs}"
        assert "Can't evaluate bulk DML" not in log
        print(f"{len(runs)} scheduled runs created by the scheduler, {len(done)} completed")
    finally:
        stack.stop()


def _runs(api: str) -> list[dict]:
    import httpx

    resp = httpx.post(f"{api}/flow_runs/filter", json={"flows": {"name": {"any_": ["lmops-tick"]}}, "limit": 200},
                      timeout=10)
    resp.raise_for_status()
    return [{"auto_scheduled": r["auto_scheduled"], "state_type": r["state_type"]} for r in resp.json()]


def test_sandbox_params_name_the_projects_files_absolutely(tmp_path):
    """The scenario's sandbox (.lmops/drift-scenario) reads the project's params: a relative path there
    (real/params.yaml's "text:../data/english/calibration.txt") is made absolute, one that names nothing
    under the project (the embedded default's "corpus") is left as it is."""
    from tasks.scenario import absolute_paths

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "calib.txt").write_text("text")
    raw = {"quantize": {"calibration": "text:data/calib.txt"}, "prompts": {"templates": "missing"},
           "train": {"base": "scratch"}, "evaluate": {}}
    out = absolute_paths(raw, tmp_path)
    assert out["quantize"]["calibration"] == f"text:{(tmp_path / 'data' / 'calib.txt').resolve()}"
    assert out["prompts"]["templates"] == "missing" and out["train"]["base"] == "scratch"
