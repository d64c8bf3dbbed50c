"""One `lmops run` per project at a time: `.lmops/run.lock`, taken before Prefect starts.

The lock file holds the owner's pid, start time and command (and, once the flow runs, its Prefect
flow run id). A second run fails at once with one line naming the running one, instead of DVC's lock
error wrapped in tracebacks minutes later. A lock whose pid is dead (a run killed with -9) is taken
over."""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lmops.errors import LmopsError
from lmops.io import pid_alive
from lmops.layout import STATE

RUN_LOCK = STATE / "run.lock"


class RunLocked(LmopsError):
    """Another `lmops run` holds the project's run lock."""


def read_lock(root: str | Path) -> dict | None:
    try:
        info = json.loads((Path(root) / RUN_LOCK).read_text())
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        return {}  # half-written or corrupt: its owner is unknown
    return info if isinstance(info, dict) else {}


def describe(info: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    flow_run = f", flow run {info['flow_run_id']}" if info.get("flow_run_id") else ""
    return f"pid {info.get('pid')}, started {started}{flow_run}: {info.get('command', '?')}"


def _take(path: Path, info: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump(info, fh)
    return True


@contextmanager
def run_lock(root: str | Path, command: str | None = None) -> Iterator[Path]:
    """Hold the project's run lock for the block; RunLocked (one line) if a live run holds it."""
    path = Path(root) / RUN_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"pid": os.getpid(), "started": time.time(), "command": command or " ".join(["lmops", *sys.argv[1:]])}
    for _ in range(3):
        if _take(path, info):
            break
        held = read_lock(root)
        if held is None:
            continue  # released meanwhile
        pid = held.get("pid")
        if isinstance(pid, int) and pid_alive(pid) and pid != os.getpid():
            raise RunLocked(f"another `lmops run` is running in {Path(root).resolve()} ({describe(held)}); wait for "
                            f"it to finish or stop it (kill {pid}). Lock file: {path}")
        if not held and time.time() - path.stat().st_mtime < 10:
            raise RunLocked(f"{path} is being written by another `lmops run`; try again in a few seconds")
        path.unlink(missing_ok=True)  # a dead run's lock (kill -9): take it over
    else:
        raise RunLocked(f"could not take {path}: other runs keep starting; try again")
    try:
        yield path
    finally:
        if (read_lock(root) or {}).get("pid") == os.getpid():
            path.unlink(missing_ok=True)


def note_flow_run(root: str | Path, flow_run_id: str) -> None:
    """Record the Prefect flow run id in our lock (for the message a second run prints)."""
    path = Path(root) / RUN_LOCK
    info = read_lock(root) or {}
    if info.get("pid") == os.getpid():
        from lmops.io import write_json

        write_json(path, {**info, "flow_run_id": flow_run_id})
