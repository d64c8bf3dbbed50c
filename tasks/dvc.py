"""Prefect tasks that run DVC: the reproducible stages run through `dvc repro`, so a Prefect run
and a local `dvc repro` share one cache and skip the same unchanged work.

A stage's output streams into the task run's log line by line while it runs. Progress bars are
no carriage-return noise: tqdm prints at most every `TQDM_MININTERVAL` seconds (10 here) and a
line rewritten with '\\r' is logged at most once per `LMOPS_LOG_CR_SECONDS` (10). The stages'
`lmops-progress:` lines (lmops/progress.py) drive a progress artifact per stage, with an estimate
of the time left; the seconds each stage took are kept in `.lmops/stage_times.json` for the next
run's estimates."""
from __future__ import annotations

import codecs
import json
import os
import re
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from prefect import task
from prefect.logging import get_run_logger

from lmops.layout import STAGE_TIMES
from lmops.progress import PREFIX as PROGRESS_PREFIX
from lmops.progress import parse as parse_progress

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def dvc_env() -> dict[str, str]:
    """The venv's bin goes first so its `lmops` is the one run; output unbuffered, so lines arrive as
    they are printed; tqdm and lmops.progress in their logging-friendly modes."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "PYTHONUNBUFFERED": "1",
           "LMOPS_PROGRESS": "1"}
    env.setdefault("TQDM_MININTERVAL", "10")
    return env


class LineSplitter:
    """Bytes in, log lines out: '\\n' ends a line; a segment ended by '\\r' (a progress bar redrawing
    itself) is passed on at most once per `cr_seconds`, and blank or repeated redraws never."""

    def __init__(self, emit: Callable[[str], None], cr_seconds: float = 10.0):
        self.emit, self.cr_seconds = emit, cr_seconds
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.buf, self.last_cr, self.pending = "", -1e18, ""

    def feed(self, data: bytes, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.buf += self.decoder.decode(data)
        while (m := re.search(r"[\r\n]", self.buf)):
            seg, sep, self.buf = self.buf[:m.start()], m.group(), self.buf[m.end():]
            seg = ANSI.sub("", seg).rstrip()
            if sep == "\n":
                if seg.strip():
                    self.emit(seg)
                self.pending = ""
            elif seg.strip():
                self.pending = seg
                if now - self.last_cr >= self.cr_seconds:
                    self.emit(seg)
                    self.last_cr, self.pending = now, ""

    def close(self) -> None:
        rest = ANSI.sub("", self.buf + self.decoder.decode(b"", final=True)).rstrip()
        for seg in (self.pending, rest):
            if seg.strip():
                self.emit(seg)
        self.buf = self.pending = ""


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600} h {s % 3600 // 60} min" if s >= 3600 else f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"


def run_streaming(cmd: list[str], cwd: str, env: dict[str, str], on_line: Callable[[str], None],
                  cr_seconds: float | None = None) -> tuple[int, str]:
    """Run `cmd`, calling `on_line` for each output line as it is produced; (exit code, output tail)."""
    tail: deque[str] = deque(maxlen=400)

    def emit(line: str) -> None:
        tail.append(line)
        on_line(line)

    if cr_seconds is None:
        cr_seconds = float(os.environ.get("LMOPS_LOG_CR_SECONDS", "10"))
    splitter = LineSplitter(emit, cr_seconds)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        while (chunk := proc.stdout.read1(65536)):
            splitter.feed(chunk)
        splitter.close()
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return rc, "\n".join(tail)


def _dvc(args: list[str], project: str, on_line: Callable[[str], None] | None = None) -> str:
    """Run a DVC command in `project`; each output line goes to `on_line` as it comes."""
    cmd = [os.path.join(str(Path(sys.executable).parent), "dvc"), *args]
    rc, out = run_streaming(cmd, project, dvc_env(), on_line or (lambda _line: None))
    if rc:
        raise RuntimeError(f"dvc {' '.join(args)} failed ({rc}):\n{out[-6000:]}")
    return out


class StageProgress:
    """A stage's progress artifact, fed by its `lmops-progress:` lines. A stage may report several
    loops (a fine-tune inside a scheme loop, fine-tunes before the methods): the bar follows the
    first loop seen that has not finished, and the description says which loop it is."""

    def __init__(self, stage: str, started: float):
        self.stage, self.started, self.id = stage, started, None
        self.state: dict[str, tuple[int, int]] = {}
        self.key = "progress-" + re.sub(r"[^a-z0-9-]", "-", stage.lower())

    def update(self, label: str, done: int, total: int) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        self.state[label] = (done, total)
        current = next((k for k, (d, t) in self.state.items() if d < t), label)
        d, t = self.state[current]
        pct = round(100.0 * d / max(t, 1), 1)
        elapsed = time.monotonic() - self.started
        frac = d / max(t, 1)
        left = f", about {_fmt_seconds(elapsed * (1 - frac) / frac)} left in this loop" if 0 < frac < 1 else ""
        desc = f"stage `{self.stage}`: {current} {d}/{t} ({_fmt_seconds(elapsed)} so far{left})"
        if self.id is None:
            self.id = create_progress_artifact(pct, key=self.key, description=desc)
        else:
            update_progress_artifact(self.id, pct, description=desc)

    def finish(self) -> None:
        if self.id is not None:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(self.id, 100.0, description=f"stage `{self.stage}` done in "
                                     f"{_fmt_seconds(time.monotonic() - self.started)}")


def stage_times(project: str) -> dict[str, float]:
    path = Path(project) / STAGE_TIMES
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _record_time(project: str, stage: str, seconds: float) -> None:
    path = Path(project) / STAGE_TIMES
    times = {**stage_times(project), stage: round(seconds, 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(times, indent=2, sort_keys=True))
    tmp.replace(path)


def estimate(project: str, stages: list[str]) -> str:
    """'about 3 min 10 s (previous runs)' for `stages`, or '' when no stage has a recorded time."""
    times = stage_times(project)
    known = [times[s] for s in stages if s in times]
    if not known:
        return ""
    partial = "" if len(known) == len(stages) else f", {len(stages) - len(known)} stage(s) never timed"
    return f"at most about {_fmt_seconds(sum(known))} if every stage runs (previous runs{partial})"


@task(name="dvc-repro", timeout_seconds=3 * 3600, task_run_name="repro-{stage}")
def repro_stage(stage: str, project: str, position: str = "") -> bool:
    """Reproduce one stage (never its upstream: the flow orders them), streaming its output into this
    task run's log. True if the stage ran."""
    log = get_run_logger()
    before = stage_times(project).get(stage)
    log.info("stage %s%s: checking / running%s", stage, f" ({position})" if position else "",
             f"; when it last ran it took {_fmt_seconds(before)}" if before else "")
    started = time.monotonic()
    progress = StageProgress(stage, started)
    seen = {"ran": False}

    def on_line(line: str) -> None:
        seen["ran"] = seen["ran"] or f"Running stage '{stage}'" in line
        # a progress line may follow a tqdm bar's last redraw on the same line (the bar ends in no newline)
        before, _, rest = line.partition(PROGRESS_PREFIX)
        if before.strip():
            log.info("%s", before.rstrip())
        parsed = parse_progress(PROGRESS_PREFIX + rest) if rest else None
        if parsed is None:
            return
        try:
            progress.update(*parsed)
        except Exception as err:  # an artifact is a view: it never fails the stage
            log.debug("progress artifact not updated: %s", err)

    _dvc(["repro", "--single-item", stage], project, on_line)
    ran = seen["ran"]
    seconds = time.monotonic() - started
    if ran:
        _record_time(project, stage, seconds)
        progress.finish()
    log.info("stage %s %s", stage, f"ran in {_fmt_seconds(seconds)}" if ran else "was up to date (DVC cache)")
    return ran


@task(name="dvc-push", retries=3, retry_delay_seconds=10, timeout_seconds=1800)
def push(targets: list[str], project: str) -> str:
    """Push outputs to the default DVC remote (`.dvc/config`); retried, since remotes are networked."""
    return _dvc(["push", *targets], project)
