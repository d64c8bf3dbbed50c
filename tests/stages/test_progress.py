"""Live stage output: lines stream as they are produced, progress bars become periodic log lines,
`lmops-progress:` lines are machine-readable."""
from __future__ import annotations

import sys
import time

from lmops import progress
from tasks.dvc import LineSplitter, run_streaming


def test_line_splitter_turns_carriage_returns_into_periodic_lines():
    out: list[str] = []
    s = LineSplitter(out.append, cr_seconds=10)
    s.feed(b"Running stage 'train':\n> lmops stage train\n", now=0)
    # a bar redrawn 49 times in 20 s (tqdm writes '\r' + bar, so a state is logged when the next arrives):
    # at most one log line per 10 s, not 49
    for i in range(1, 50):
        s.feed(f"\rtrain:  {i}%|#| {i}/100 [00:01<00:09]".encode(), now=i * 0.4)
    s.feed(b"\r\x1b[A   \r", now=21)  # a leave=False bar clearing itself: nothing
    s.feed(b"\rtrain: 100%|#| 100/100\n", now=22)
    s.feed("caf\xc3".encode("latin-1")[:4] + b"\xa9 done", now=23)  # a UTF-8 char split across reads
    s.close()
    assert out[:2] == ["Running stage 'train':", "> lmops stage train"]
    bars = [line for line in out if line.startswith("train:")]
    assert bars == ["train:  1%|#| 1/100 [00:01<00:09]", "train:  26%|#| 26/100 [00:01<00:09]",
                    "train:  49%|#| 49/100 [00:01<00:09]", "train: 100%|#| 100/100"]
    assert out[-1] == "café done"


def test_output_streams_while_the_command_runs():
    seen: list[tuple[str, float]] = []
    code = "import sys, time\nfor i in range(3):\n    print('line', i, flush=True); time.sleep(0.7)\n"
    start = time.monotonic()
    rc, tail = run_streaming([sys.executable, "-c", code], ".", {}, lambda line: seen.append((line, time.monotonic())))
    end = time.monotonic()
    assert rc == 0 and [line for line, _ in seen] == ["line 0", "line 1", "line 2"] and "line 2" in tail
    assert seen[0][1] - start < end - start - 1.0  # the first line arrived well before the command ended


def test_progress_lines_round_trip_and_throttle(monkeypatch, capsys):
    monkeypatch.setenv("LMOPS_PROGRESS", "1")
    monkeypatch.setenv("LMOPS_PROGRESS_SECONDS", "3600")
    got = []
    remove = progress.add_listener(lambda *a: got.append(a))
    try:
        for step in range(1, 101):
            progress.report("retrain (LoRA)", step, 100)
    finally:
        remove()
    lines = capsys.readouterr().err.splitlines()
    assert [progress.parse(line) for line in lines] == [("retrain (LoRA)", 1, 100), ("retrain (LoRA)", 100, 100)]
    assert got == [("retrain (LoRA)", 1, 100), ("retrain (LoRA)", 100, 100)]
    assert progress.parse("train:  3%|#| 3/100") is None
