"""The fan-out on loopback, end to end, and its benchmark: a Prefect server (SQLite, or PostgreSQL with
--postgres), a bare git repository and an S3 bucket (moto) holding a tiny project, N process workers
(each `--limit 1`, each in its own work directory), the `grid-cell` deployment cloned from the
repository; then `lmops-grid` runs the quantization grid and merges one table and one frontier.

    PYTHONPATH=. python -m benchmarks.fanout [--rounds 2] [--postgres]

prints the grid's wall time with one worker and with two (interleaved: 1, 2, 1, 2, ...), their ratio
and the machine's core count."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from deployments.up import Stack
from tests.project import ENV, dvc, make_project, sh

CODE = Path(__file__).resolve().parent.parent
POOL = "lmops-grid"


def pushed_project(base: Path, s3, params: dict | None = None) -> tuple[Path, Path]:
    """A tiny project (code included) that ran data + train, pushed to a bare git repo and to S3."""
    proj = make_project(base / "proj", params, skip=("evaluate", "prompts", "quantize", "long_context"))
    for name in ("flows", "tasks", "deployments"):
        shutil.copytree(CODE / name, proj / name, ignore=shutil.ignore_patterns("__pycache__"))
    bare = base / "origin.git"
    sh(["git", "init", "-q", "--bare", str(bare)], base)
    sh(["git", "remote", "add", "origin", str(bare)], proj)
    dvc(["remote", "add", "-f", "-d", "s3", s3.bucket("lmops-dvc") + f"/{base.name}"], proj)
    dvc(["remote", "modify", "s3", "endpointurl", s3.endpoint], proj)
    os.environ.update(s3.env)
    dvc(["repro"], proj)
    sh(["git", "add", "-A"], proj)
    sh(["git", "commit", "-qm", "run"], proj)
    from lmops.remote import push_then_git

    push_then_git(proj)
    return proj, bare


class GridHarness:
    """A Prefect server, the work pool and the deployments; `workers(n)` swaps in n workers."""

    def __init__(self, base: Path, bare: Path, s3, database_url: str | None = None):
        self.base, self.bare = base, bare
        self.stack = Stack(base / "stack", database_url=database_url)
        self.stack.env.update(s3.env)
        self.stack.env["PYTHONPATH"] = ""  # workers import the code of their own clone, nothing from here
        self.stack.env["PREFECT_HOME"] = str(base / "prefect-home")
        self.stack.env["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] = "true"
        self.workers_up: list[str] = []

    def start(self) -> None:
        self.stack.start_prefect(timeout=240)
        subprocess.run(["prefect", "work-pool", "create", POOL, "--type", "process", "--overwrite"], env=self.stack.env,
                       cwd=self.base, check=True, capture_output=True)
        code = (f"from deployments.fanout import deploy_fanout; print(deploy_fanout({f'file://{self.bare}'!r}, "
                f"work_pool={POOL!r}))")
        proc = subprocess.run([sys.executable, "-c", code], env={**self.stack.env, "PYTHONPATH": str(CODE)},
                              cwd=self.base, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]

    def workers(self, n: int) -> None:
        for name in self.workers_up:
            proc = self.stack.procs.pop(name)
            os.killpg(proc.pid, 15)
            proc.wait(30)
        self.workers_up = []
        for i in range(n):
            wd = self.base / f"worker-{i}"  # each worker in its own work directory
            wd.mkdir(exist_ok=True)
            name = f"worker-{i}"
            out = open(self.stack.logs / f"{name}.log", "ab")
            self.stack.procs[name] = subprocess.Popen(
                ["prefect", "worker", "start", "--pool", POOL, "--type", "process", "--limit", "1", "--name",
                 f"{name}-{time.monotonic_ns()}"], cwd=wd, env=self.stack.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
            self.workers_up.append(name)

    def run_grid(self, kind: str = "quantize", timeout: float = 900) -> tuple[float, Path, str]:
        """A fresh clone of the repository, `lmops-grid` run there (the parent, outside the pool);
        returns (wall seconds, the clone, the merged table)."""
        clone = self.base / f"parent-{time.monotonic_ns()}"
        sh(["git", "clone", "-q", str(self.bare), str(clone)], self.base)
        code = f"from flows.fanout import grid; print(grid(kind={kind!r}, project={str(clone)!r}))"
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], cwd=clone, capture_output=True, text=True, timeout=timeout,
                              env={**ENV, **self.stack.env, "PYTHONPATH": str(clone)})
        wall = time.perf_counter() - start
        assert proc.returncode == 0, f"grid failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        return wall, clone, proc.stdout

    def stop(self) -> None:
        self.stack.stop()


def main(argv: list[str] | None = None) -> None:
    import tempfile

    from tests.s3 import loopback_s3

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2, help="1-worker and 2-worker runs, interleaved")
    ap.add_argument("--postgres", action="store_true")
    args = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="lmops-fanout-"))
    with ExitStack() as stack:
        s3 = stack.enter_context(loopback_s3())
        url = None
        if args.postgres:
            from tests.postgres import loopback_postgres

            url = stack.enter_context(loopback_postgres())
        from tests.conftest import TINY

        _, bare = pushed_project(base, s3, TINY)
        h = GridHarness(base, bare, s3, url)
        stack.callback(h.stop)
        h.start()
        times: dict[int, list[float]] = {1: [], 2: []}
        for r in range(args.rounds):
            for n in (1, 2):
                h.workers(n)
                wall, _, _ = h.run_grid()
                times[n].append(wall)
                print(f"round {r + 1}: {n} worker(s): {wall:.1f} s", flush=True)
    one, two = (sum(v) / len(v) for v in (times[1], times[2]))
    print(f"grid ({len(TINY['quantize']['schemes'])} schemes) wall time: 1 worker {one:.1f} s, 2 workers {two:.1f} s; "
          f"ratio 2/1 = {two / one:.2f} (speed-up {one / two:.2f}x) on {os.cpu_count()} cores")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
