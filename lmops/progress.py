"""Progress of long loops (training steps, quantization schemes, long-context methods) as
machine-readable lines, without importing the orchestration layer.

`report(label, done, total)` is called by the loops. When `LMOPS_PROGRESS=1` (set by tasks/dvc.py
for the stages it runs through `dvc repro`) it prints `lmops-progress: <label> <done>/<total>` to
stderr, at most once per `LMOPS_PROGRESS_SECONDS` (default 5) per label plus the last step; the
Prefect task parses those lines (`parse`) into a progress artifact. In-process callers (the
retraining flow's fine-tune) register a listener instead."""
from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable

PREFIX = "lmops-progress:"
_LINE = re.compile(rf"^{PREFIX} (?P<label>.+) (?P<done>\d+)/(?P<total>\d+)\s*$")
_listeners: list[Callable[[str, int, int], None]] = []
_last: dict[str, float] = {}


def add_listener(fn: Callable[[str, int, int], None]) -> Callable[[], None]:
    """Call `fn(label, done, total)` on every reported step (throttled); returns the remover."""
    _listeners.append(fn)
    return lambda: _listeners.remove(fn) if fn in _listeners else None


def report(label: str, done: int, total: int) -> None:
    now = time.monotonic()
    interval = float(os.environ.get("LMOPS_PROGRESS_SECONDS", "5"))
    if done < total and done > 1 and now - _last.get(label, -1e18) < interval:
        return
    _last[label] = now
    for fn in list(_listeners):
        fn(label, done, total)
    if os.environ.get("LMOPS_PROGRESS") == "1":
        print(f"{PREFIX} {label} {done}/{total}", file=sys.stderr, flush=True)


def parse(line: str) -> tuple[str, int, int] | None:
    """(label, done, total) of a `lmops-progress:` line, else None."""
    m = _LINE.match(line.strip())
    return (m["label"], int(m["done"]), int(m["total"])) if m else None
