"""The production log store: append-only Parquet parts, written off the request path.

Layout: `<dir>/part-<first timestamp, UTC>-<writer id>-<seq>.parquet`. A part is never modified
after it is written (temp file + rename), so readers never see half a file, and the monitor can
read a window while the server keeps appending.

Schema (one row per request, failed ones included; `SCHEMA` below is the contract):

| column             | type                 | meaning                                                      |
|--------------------|----------------------|--------------------------------------------------------------|
| request_id         | string               | unique id, also returned to the client as the response `id`  |
| timestamp          | timestamp[us, UTC]   | when the request arrived                                     |
| endpoint           | string               | `/v1/completions` or `/v1/chat/completions`                  |
| status             | int16                | HTTP status returned (200, or the 4xx/5xx code)              |
| error              | string (nullable)    | the error message for a failed request                       |
| model              | string               | registry artifact name (e.g. `lmops-model`)                  |
| model_version      | string               | registry version served (`v0.0.3`), `unregistered` otherwise |
| prompt_version     | string               | production prompt version applied (`none` without one)       |
| prompt             | string               | the prompt as the client sent it (chat: the last user turn)  |
| rendered_prompt    | string               | the text the model saw, after the production prompt template |
| response           | string               | the generated text                                           |
| prompt_tokens      | int32                | tokens in `rendered_prompt`                                  |
| completion_tokens  | int32                | tokens generated                                             |
| latency_ms         | float64              | arrival to response, queueing included                       |
| mean_logprob       | float64 (nullable)   | mean log-probability of the generated tokens under the model |
| user               | string               | the OpenAI `user` field; the simulator puts `sim:<kind>` here |
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger("lmops.serve.logstore")

COLUMNS: dict[str, str] = {
    "request_id": "string", "timestamp": "timestamp", "endpoint": "string", "status": "int16",
    "error": "string", "model": "string", "model_version": "string", "prompt_version": "string",
    "prompt": "string", "rendered_prompt": "string", "response": "string", "prompt_tokens": "int32",
    "completion_tokens": "int32", "latency_ms": "float64", "mean_logprob": "float64", "user": "string",
}
QUARANTINE = "quarantine"  # sub-directory that corrupt parts are moved to


def schema():
    """The Arrow schema of a log part (built lazily: pyarrow is heavy)."""
    import pyarrow as pa

    types = {"string": pa.string(), "timestamp": pa.timestamp("us", tz="UTC"), "int16": pa.int16(),
             "int32": pa.int32(), "float64": pa.float64()}
    return pa.schema([(name, types[t]) for name, t in COLUMNS.items()])


def write_part(rows: list[dict], log_dir: str | Path, writer_id: str = "", seq: int = 0) -> Path:
    """Write `rows` as one new Parquet part (atomically) and return its path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=schema())
    first = min(r["timestamp"] for r in rows).strftime("%Y%m%dT%H%M%S%fZ")
    path = log_dir / f"part-{first}-{writer_id or uuid.uuid4().hex[:8]}-{seq:06d}.parquet"
    tmp = log_dir / f".{path.name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def quarantine(path: Path, reason: str) -> Path:
    """Move a corrupt part aside (never delete evidence) and say so in the log."""
    dest = path.parent / QUARANTINE / path.name
    dest.parent.mkdir(exist_ok=True)
    os.replace(path, dest)
    log.warning("quarantined corrupt log part %s -> %s: %s", path, dest, reason)
    return dest


def read_logs(log_dir: str | Path, start: datetime | None = None, end: datetime | None = None,
              quarantine_corrupt: bool = True):
    """Rows with `start <= timestamp < end` from every part in `log_dir`, as a pandas DataFrame
    sorted by timestamp (empty, with the schema's columns, when there are none). A part that cannot
    be read is moved to `<log_dir>/quarantine/` with a warning (or skipped if not `quarantine_corrupt`)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    frames = []
    for path in sorted(Path(log_dir).glob("part-*.parquet")):
        try:
            table = pq.read_table(path)
            missing = set(COLUMNS) - set(table.column_names)
            if missing:
                raise ValueError(f"missing columns {sorted(missing)}")
            frames.append(table.select(list(COLUMNS)).cast(schema()))
        except (OSError, ValueError, pa.ArrowException) as err:
            if quarantine_corrupt:
                quarantine(path, str(err))
            else:
                log.warning("skipped unreadable log part %s: %s", path, err)
    df = (pa.concat_tables(frames) if frames else schema().empty_table()).to_pandas()
    if start is not None:
        df = df[df["timestamp"] >= pd.Timestamp(start)]
    if end is not None:
        df = df[df["timestamp"] < pd.Timestamp(end)]
    return df.sort_values("timestamp", kind="stable").reset_index(drop=True)


class LogWriter:
    """Batches rows in memory and writes a part every `flush_seconds` or `batch_rows` rows, on its
    own thread. `log()` never blocks and never raises: the request path must not depend on disk."""

    def __init__(self, log_dir: str | Path, flush_seconds: float = 1.0, batch_rows: int = 256,
                 max_queue: int = 100_000):
        self.log_dir = Path(log_dir)
        self.flush_seconds, self.batch_rows = flush_seconds, batch_rows
        self.queue: queue.Queue[dict] = queue.Queue(maxsize=max_queue)
        self.writer_id = f"{os.getpid()}{uuid.uuid4().hex[:4]}"
        self.seq = 0
        self.written = self.dropped = self.write_errors = 0
        self._pending: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lmops-logwriter", daemon=True)
        self._thread.start()

    def log(self, row: dict) -> None:
        row.setdefault("timestamp", datetime.now(UTC))
        try:
            self.queue.put_nowait(row)
        except queue.Full:  # only if the disk stalls for a long time: count it, never block
            self.dropped += 1

    def _drain(self) -> None:
        while len(self._pending) < self.batch_rows:
            try:
                self._pending.append(self.queue.get_nowait())
            except queue.Empty:
                return

    def _flush(self) -> None:
        if not self._pending:
            return
        try:
            write_part(self._pending, self.log_dir, self.writer_id, self.seq)
        except Exception as err:  # keep the rows and retry on the next tick; a request never sees this
            self.write_errors += 1
            log.error("writing a production log part to %s failed (will retry): %s", self.log_dir, err)
            return
        self.seq += 1
        self.written += len(self._pending)
        self._pending = []

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            self._stop.wait(min(0.1, self.flush_seconds))
            self._drain()
            if len(self._pending) >= self.batch_rows or time.monotonic() - last >= self.flush_seconds:
                self._flush()
                last = time.monotonic()
        while True:  # final flush on close: everything accepted gets written
            self._drain()
            if not self._pending:
                break
            before = self.written
            self._flush()
            if self.written == before:  # the disk is failing; give up rather than hang shutdown
                break

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    @property
    def backlog(self) -> int:
        return self.queue.qsize() + len(self._pending)
