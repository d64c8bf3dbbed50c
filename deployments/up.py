"""`lmops up`: the whole local stack on loopback, as child processes of this one.

1. `prefect server start` on 127.0.0.1 (UI and API), its database under `<project>/.lmops/prefect`;
2. the spec's work pool (`deployments/prefect.yaml`, `lmops-process`) and a process worker polling it;
3. every deployment of the spec (`deployments/ops.py`), with its schedules and triggers: the pipeline
   weekly, monitoring on its interval, retraining on the drift event;
4. the model server, `lmops serve` (the registry's champion, hot-reloaded on promotion).

The scenario flow (`flows/scenario.py`) uses the same `Stack` without a Prefect server of its own:
a worker and a model server for its sandbox, against the server its flow run reports to.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


class Stack:
    """A Prefect server (only `lmops up` starts one), a process worker and the model server, for one
    project directory. With `api_url` the children report to that server and none is started."""

    def __init__(self, project: str | Path, prefect_port: int | None = None, logs: Path | None = None,
                 api_url: str | None = None, database_url: str | None = None):
        self.project = Path(project).resolve()
        self.port = prefect_port or free_port()
        self.api = api_url or f"http://{LOOPBACK}:{self.port}/api"
        self.logs = logs or self.project / ".lmops" / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        bin_dir = str(Path(sys.executable).parent)
        home = {} if api_url else {"PREFECT_HOME": str(self.project / ".lmops" / "prefect")}
        self.env = {**os.environ, "PREFECT_API_URL": self.api, **home,
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "2",
                    "PREFECT_WORKER_PREFETCH_SECONDS": "5", "PREFECT_LOGGING_LEVEL": "INFO",
                    "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1",
                    "PYTHONPATH": str(self.project) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                    "TOKENIZERS_PARALLELISM": "false"}
        if database_url:  # PostgreSQL (postgresql+asyncpg://...) instead of the default SQLite file
            self.env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        out = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(args, cwd=self.project, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_prefect(self, timeout: float = 120) -> None:
        proc = self._start("prefect-server", ["prefect", "server", "start", "--host", LOOPBACK, "--port", str(self.port)])
        wait_http(f"{self.api}/health", timeout, proc)

    def start_worker(self, pool: str) -> None:
        subprocess.run(["prefect", "work-pool", "create", pool, "--type", "process", "--overwrite"], env=self.env,
                       cwd=self.project, check=True, capture_output=True)
        self._start(f"worker-{pool}", ["prefect", "worker", "start", "--pool", pool, "--type", "process"])

    def start_model_server(self, port: int, timeout: float = 120, params: str = "params.yaml") -> str:
        proc = self._start("model-server", ["lmops", "--root", str(self.project), "--params", params, "serve", "--host", LOOPBACK,
                                            "--port", str(port)])
        url = f"http://{LOOPBACK}:{port}"
        wait_http(f"{url}/health", timeout, proc)
        return url

    def stop(self) -> None:
        """Stop our children (each started in its own session, so its own children go too)."""
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, 15)
                except ProcessLookupError:
                    continue
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)


def cancel_stale_runs(api: str) -> list[str]:
    """Flow runs a stopped stack left PENDING or RUNNING (their worker and processes are gone) are
    cancelled, so the UI shows no run that will never finish and concurrency limits free up."""
    resp = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"state": {"type": {"any_": ["PENDING", "RUNNING",
                                                                                        "CANCELLING"]}}}, "limit": 200},
                      timeout=30)
    resp.raise_for_status()
    cancelled = []
    for run in resp.json():
        state = {"type": "CANCELLED", "name": "Cancelled",
                 "message": "cancelled by `lmops up`: the stack that ran it was stopped"}
        r = httpx.post(f"{api}/flow_runs/{run['id']}/set_state", json={"state": state, "force": True}, timeout=30)
        if r.status_code < 300:
            cancelled.append(run["name"])
    return cancelled


def deploy(stack: Stack, project: Path) -> dict:
    """Deploy the spec against the stack's server (in a child: PREFECT_API_URL is per process)."""
    code = ("import json; from deployments.ops import deploy_ops; "
            f"print(json.dumps(deploy_ops({str(project)!r})))")
    proc = subprocess.run([sys.executable, "-c", code], env=stack.env, cwd=project, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"deploying the ops flows failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    import json

    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    from deployments.spec import entries, pool
    from lmops.params import load_params

    ap = argparse.ArgumentParser(prog="lmops up", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".")
    ap.add_argument("--params", default="params.yaml", help="params file, relative to --root")
    ap.add_argument("--prefect-port", type=int, default=4200)
    ap.add_argument("--database-url", default=os.environ.get("LMOPS_PREFECT_DATABASE_URL"),
                    help="the Prefect server's database, e.g. postgresql+asyncpg://user:pw@host:5432/prefect "
                         "(default: $LMOPS_PREFECT_DATABASE_URL, else SQLite under .lmops/prefect)")
    ap.add_argument("--model-port", type=int, help="model server port (default: serve.port of the params file)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind and stop the children on `kill`
    project = Path(args.root).resolve()
    p = load_params(project / args.params)
    stack = Stack(project, args.prefect_port, database_url=args.database_url)
    try:
        stack.start_prefect()
        db = stack.env.get("PREFECT_API_DATABASE_CONNECTION_URL", "SQLite").split("@")[-1]  # no password printed
        print(f"Prefect server and UI: http://{LOOPBACK}:{stack.port} (database: {db})")
        if (stale := cancel_stale_runs(stack.api)):
            print(f"cancelled {len(stale)} flow run(s) a stopped stack left pending or running: {', '.join(stale)}")
        for name in sorted({pool(dep) for dep in entries()}):
            stack.start_worker(name)
        print(f"deployments: {deploy(stack, project)}")
        url = stack.start_model_server(args.model_port or p.serve.port, params=args.params)
        print(f"model server: {url}/v1 (champion of the registry; logs in {p.serve.log_dir})\n"
              f"process logs in {stack.logs}; Ctrl-C stops everything")
        while all(proc.poll() is None for proc in stack.procs.values()):
            time.sleep(1)
        dead = [n for n, proc in stack.procs.items() if proc.poll() is not None]
        print(f"stopped: {dead} exited (see {stack.logs})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
