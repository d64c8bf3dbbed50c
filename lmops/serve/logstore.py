"""The production log store: append-only Parquet parts, fed through a crash-safe journal.

Layout: `<dir>/part-<first timestamp, UTC>-<writer id>-<seq>.parquet`. A part is never modified
after it is written (temp file + rename), so readers never see half a file, and the monitor can
read a window while the server keeps appending.

Durability (`LogWriter`): each request's row is appended to a JSONL journal segment,
`<dir>/journal/<writer id>-<seq>.jsonl`, with one `os.write` before the server returns the
response. The row is then in the OS page cache, which outlives the process: a `kill -9`, an OOM
kill or a crash of the server loses no answered request. A background thread rotates the segment
every `flush_seconds` (or `batch_rows` rows), writes it as the Parquet part of the same writer id and
seq (temp file + rename), then deletes the segment. Bound: a row is in the journal before its
response is sent, and in a Parquet part (visible to `read_logs`) within about `flush_seconds` plus
the time to write one part while the writer runs; the rows of a killed writer become Parquet when
the next `LogWriter` on the same directory starts (the next `lmops serve`), which recovers every
segment left by a dead writer. Recovery is exactly-once: a segment always becomes the part with the
same name, so a crash between writing the part and deleting the segment rewrites the same part
(no duplicate rows). No fsync: a power loss or kernel crash can lose what the OS had not written back.

A row that cannot be written to Parquet (a lone UTF-16 surrogate in a string, a wrong type) is
moved to `<dir>/quarantine/rows-<writer id>-<seq>.jsonl` as `{"reason", "row"}` (JSON-escaped, so the
evidence is exact) with an error log line; the other rows of its segment and all later rows are
written. Unparsable journal lines (a write torn by the kill) are quarantined the same way.

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

import fcntl
import json
import logging
import os
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
QUARANTINE = "quarantine"  # sub-directory that corrupt parts and unwritable rows are moved to
JOURNAL = "journal"  # sub-directory of the journal segments (rows not yet in a Parquet part)


def schema():
    """The Arrow schema of a log part (built lazily: pyarrow is heavy)."""
    import pyarrow as pa

    types = {"string": pa.string(), "timestamp": pa.timestamp("us", tz="UTC"), "int16": pa.int16(),
             "int32": pa.int32(), "float64": pa.float64()}
    return pa.schema([(name, types[t]) for name, t in COLUMNS.items()])


def _table(rows: list[dict]):
    import pyarrow as pa

    return pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=schema())


def write_part(rows: list[dict], log_dir: str | Path, writer_id: str = "", seq: int = 0) -> Path:
    """Write `rows` as one new Parquet part (atomically) and return its path."""
    import pyarrow.parquet as pq

    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    table = _table(rows)
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


# ---- the journal ---------------------------------------------------------------------------------------

def _json_default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def journal_line(row: dict) -> bytes:
    """One journal line: JSON with every non-ASCII character escaped, so any Python string (a lone
    surrogate included) round-trips exactly and the line is always encodable."""
    return (json.dumps(row, ensure_ascii=True, default=_json_default) + "\n").encode("ascii")


def _parse_row(line: str) -> dict:
    row = json.loads(line)
    if not isinstance(row, dict):
        raise ValueError(f"a journal line is a JSON object, not {type(row).__name__}")
    if isinstance(row.get("timestamp"), str):
        ts = datetime.fromisoformat(row["timestamp"])
        row["timestamp"] = ts if ts.tzinfo else ts.replace(tzinfo=UTC)  # naive: UTC, as Arrow reads it
    return row


def _writable(row: dict) -> str | None:
    """Why `row` cannot go into a Parquet part, or None."""
    try:
        if not isinstance(row.get("timestamp"), datetime):
            raise TypeError(f"timestamp is {type(row.get('timestamp')).__name__}, not a datetime")
        _table([row])
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return None


def compact_segment(segment: Path, log_dir: Path) -> tuple[int, int]:
    """Write a closed journal segment as its Parquet part, quarantine the rows that cannot be
    written, then delete the segment: (rows written, rows quarantined). Idempotent: the part's name
    comes from the segment's, so running it again after a crash rewrites the same part.
    Raises OSError (the segment stays, for the next try) when the disk fails."""
    writer_id, _, seq = segment.stem.rpartition("-")
    rows, bad = [], []
    for n, line in enumerate(segment.read_bytes().decode("utf-8", "surrogateescape").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(_parse_row(line))
        except ValueError as err:  # a line torn by a kill mid-write (its response was never sent)
            bad.append({"reason": f"unparsable journal line {n} of {segment.name}: {err}", "line": line})
    try:
        if rows:
            write_part(rows, log_dir, writer_id, int(seq))
    except OSError:
        raise
    except Exception:  # some row cannot be written: find it, write the others
        good = []
        for row in rows:
            reason = _writable(row)
            if reason is None:
                good.append(row)
            else:
                bad.append({"reason": reason, "row": row})
        rows = good
        if rows:
            write_part(rows, log_dir, writer_id, int(seq))
    if bad:
        dest = log_dir / QUARANTINE / f"rows-{segment.stem}.jsonl"
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.write_bytes(b"".join(journal_line(b) for b in bad))
        os.replace(tmp, dest)
        for b in bad:
            ident = b["row"].get("request_id") if "row" in b else "(unparsable line)"
            log.error("quarantined a production log row %s -> %s: %s", ident, dest, b["reason"])
    segment.unlink()
    return len(rows), len(bad)


def _lock(path: Path) -> int | None:
    """An exclusive lock on `path` (held until the fd is closed or the process dies), or None when
    another live process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def recover(log_dir: str | Path) -> int:
    """Compact the journal segments of every writer that is no longer running (its lock is free)
    into Parquet parts; the rows recovered. Safe while other writers run on the same directory."""
    journal = Path(log_dir) / JOURNAL
    recovered = 0
    for lock in sorted(journal.glob("*.lock")):
        fd = _lock(lock)
        if fd is None:  # a live writer: its rows are its own
            continue
        try:
            for segment in sorted(journal.glob(f"{lock.stem}-*.jsonl")):
                written, bad = compact_segment(segment, Path(log_dir))
                recovered += written
                log.warning("recovered %d production log rows (%d quarantined) from %s, left by a writer "
                            "that did not shut down", written, bad, segment)
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return recovered


class LogWriter:
    """Journals every row at once (`log()`: one os.write, never raises) and compacts the journal into
    Parquet parts on its own thread, every `flush_seconds` or `batch_rows` rows (see the module doc).
    Starting one recovers what a killed writer on the same directory left in the journal."""

    def __init__(self, log_dir: str | Path, flush_seconds: float = 1.0, batch_rows: int = 256,
                 max_queue: int = 100_000):
        self.log_dir = Path(log_dir)
        self.journal = self.log_dir / JOURNAL
        self.journal.mkdir(parents=True, exist_ok=True)
        self.flush_seconds, self.batch_rows = flush_seconds, batch_rows
        self.max_queue = max_queue  # kept for compatibility: rows wait on disk, not in memory
        self.writer_id = f"{os.getpid()}{uuid.uuid4().hex[:4]}"
        self.seq = 0
        self.written = self.dropped = self.write_errors = self.quarantined = self.journaled = 0
        self._lock_fd = _lock(self.journal / f"{self.writer_id}.lock")
        self._mutex = threading.Lock()
        self._fd: int | None = None
        self._rows = 0  # rows in the active segment
        self._opened = time.monotonic()
        self._closed: list[Path] = []  # rotated segments waiting for compaction, oldest first
        self._write_failing = False
        self._failing: Path | None = None
        self.recovered = recover(self.log_dir)  # rows of writers that were killed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lmops-logwriter", daemon=True)
        self._thread.start()

    def _segment(self, seq: int) -> Path:
        return self.journal / f"{self.writer_id}-{seq:06d}.jsonl"

    def log(self, row: dict) -> None:
        """Append `row` to the journal now (in the page cache when this returns); never raises."""
        row.setdefault("timestamp", datetime.now(UTC))
        try:
            data = journal_line(row)
            with self._mutex:
                if self._fd is None:
                    self._fd = os.open(self._segment(self.seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                    self._opened = time.monotonic()
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view):]
                self._rows += 1
                self.journaled += 1
            self._write_failing = False
        except Exception as err:  # a full or failing disk: count it, never fail the request
            self.dropped += 1
            if not self._write_failing:
                log.error("journaling a production log row in %s failed (row dropped): %s", self.journal, err)
            self._write_failing = True

    def _rotate(self, force: bool = False) -> None:
        """Close the active segment (if due, or `force`) and queue it for compaction."""
        with self._mutex:
            if self._fd is None:
                return
            if not (force or self._rows >= self.batch_rows
                    or time.monotonic() - self._opened >= self.flush_seconds):
                return
            os.close(self._fd)
            self._fd, self._rows = None, 0
            self._closed.append(self._segment(self.seq))
            self.seq += 1

    def _compact(self) -> None:
        while self._closed:
            segment = self._closed[0]
            try:
                written, bad = compact_segment(segment, self.log_dir)
            except Exception as err:  # the rows stay in the journal; retried on the next tick
                self.write_errors += 1
                if self._failing != segment:  # one line per failing segment, not one per retry
                    log.error("writing a production log part to %s failed (the rows stay in %s; will retry): %s",
                              self.log_dir, segment, err)
                self._failing = segment
                return
            self._failing = None
            self._closed.pop(0)
            self.written += written
            self.quarantined += bad

    def _run(self) -> None:
        while not self._stop.wait(min(0.1, self.flush_seconds)):
            self._rotate()
            self._compact()
        self._rotate(force=True)  # final flush on close: everything journaled gets written
        self._compact()

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            return  # a stuck disk: the journal keeps the rows for the next start
        if not self._closed:  # all in Parquet: this writer leaves nothing to recover
            (self.journal / f"{self.writer_id}.lock").unlink(missing_ok=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def backlog(self) -> int:
        """Rows journaled but not yet in a Parquet part."""
        return max(0, self.journaled - self.written - self.quarantined)
