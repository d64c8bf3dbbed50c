"""Retrieval on an embedded LanceDB table: token chunks embedded with all-MiniLM-L6-v2 (`lmops.embed`,
shared with the prompt router and the drift monitor), searched by vector, full text, or both fused by
reciprocal rank. Every write makes a new table version; `ChunkIndex.version` goes into the metrics.

A missing or corrupt table is an error (InputError): nothing is ever silently recreated empty.
Creating an index is a separate, explicit call (`ChunkIndex.create`, or `open_or_create` for a table
the database does not list at all).

The index location is a local directory or an object-store URI (`s3://bucket/prefix`, `gs://...`):
LanceDB writes its versioned tables there directly, so every machine sees the same index. Object-store
options (endpoint, region, allow_http) come from `storage_options`; credentials from the environment.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lmops.embed import DIM, embed
from lmops.errors import InputError
from lmops.longctx.chunking import ChunkConfig, chunk_ids

log = logging.getLogger(__name__)

SearchMode = Literal["vector", "fts", "hybrid"]


class RetrievalError(InputError):
    """A missing, corrupt or empty index; the message names the table."""


def _schema():
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("doc", pa.string()), ("group", pa.string()), ("text", pa.string()),
                      ("vector", pa.list_(pa.float32(), DIM))])


def fts_query(text: str) -> str:
    """Plain words only: the full-text parser treats quotes, AND/OR and punctuation as syntax."""
    return " ".join(w for w in re.findall(r"[A-Za-z0-9]+", text) if w not in ("AND", "OR", "NOT"))


def is_uri(path: str | Path) -> bool:
    """An object-store URI (s3://, gs://, az://, memory://), not a local path."""
    return "://" in str(path) and not str(path).startswith("file://")


def _location(path: str | Path) -> str | Path:
    return str(path).rstrip("/") if is_uri(path) else Path(path)


def _connect(path: str | Path, storage_options: dict[str, str] | None = None):
    import lancedb

    return lancedb.connect(str(path), storage_options=dict(storage_options) if storage_options else None)


@dataclass
class ChunkIndex:
    path: Path | str  # a local directory, or an object-store URI
    name: str
    table: object  # lancedb.table.Table

    @classmethod
    def create(cls, path: str | Path, name: str = "chunks",
               storage_options: dict[str, str] | None = None) -> "ChunkIndex":
        """A new empty table; refuses to overwrite an existing one."""
        path = _location(path)
        db = _connect(path, storage_options)
        if name in db.list_tables().tables:
            raise RetrievalError(f"LanceDB table {name!r} already exists in {path}: open it instead")
        return cls(path, name, db.create_table(name, schema=_schema()))

    @classmethod
    def open(cls, path: str | Path, name: str = "chunks",
             storage_options: dict[str, str] | None = None) -> "ChunkIndex":
        """Open an existing table; a missing or unreadable one raises RetrievalError."""
        path = _location(path)
        if not is_uri(path) and not path.is_dir():
            raise RetrievalError(f"LanceDB directory {path} is missing: build the index first")
        try:
            table = _connect(path, storage_options).open_table(name)
            table.head(1)  # read a row: a table with corrupt data files fails here, not mid-run
            missing = {"id", "doc", "group", "text", "vector"} - set(table.schema.names)
        except Exception as err:  # lance raises ValueError/RuntimeError/OSError for missing or broken files
            raise RetrievalError(f"LanceDB table {name!r} in {path} is missing or corrupt: {err}. "
                                 f"Delete {path} to rebuild it from the documents.") from None
        if missing:
            raise RetrievalError(f"LanceDB table {name!r} in {path} lacks columns {sorted(missing)}: "
                                 f"not a chunk index. Delete {path} to rebuild it.")
        return cls(path, name, table)

    @property
    def version(self) -> int:
        return int(self.table.version)

    def __len__(self) -> int:
        return int(self.table.count_rows())

    def doc_ids(self) -> set[str]:
        if not len(self):
            return set()
        return set(self.table.to_arrow().column("doc").to_pylist())

    def add_documents(self, docs: list[dict], tokenizer, cfg: ChunkConfig, progress: bool = False) -> int:
        """Chunk, embed and add the documents whose id is not in the table yet (incremental rebuild).
        `docs` rows: {id, text, group?}. Returns how many chunks were added."""
        from tqdm.auto import tqdm

        known = self.doc_ids()
        new = [d for d in docs if d["id"] not in known]
        rows = []
        for d in tqdm(new, desc="chunk", disable=not progress, leave=False):
            ids = tokenizer(d["text"], add_special_tokens=False)["input_ids"]
            for i, c in enumerate(chunk_ids(ids, cfg)):
                rows.append({"id": f"{d['id']}#{i}", "doc": d["id"], "group": str(d.get("group", "")),
                             "text": tokenizer.decode(c)})
        if not rows:
            return 0
        vectors = embed([r["text"] for r in rows])
        for r, v in zip(rows, vectors):
            r["vector"] = v
        self.table.add(rows)
        self._index_text()
        return len(rows)

    def _index_text(self) -> None:
        from lancedb.index import FTS

        self.table.create_index("text", config=FTS(), replace=True)

    def search(self, query: str, k: int = 5, mode: SearchMode = "hybrid", group: str | None = None,
               rrf_k: int = 60) -> list[dict]:
        """Top-k chunks, best first: [{id, doc, text, score}]. `group` restricts to one group."""
        if not len(self):
            raise RetrievalError(f"LanceDB table {self.name!r} in {self.path} is empty: add documents before searching")
        if mode not in ("vector", "fts", "hybrid"):
            raise ValueError(f"unknown search mode {mode!r}: use vector, fts or hybrid")
        where = None if group is None else f"`group` = '{group}'"
        if mode == "vector":
            q = self.table.search(embed([query])[0], query_type="vector").metric("cosine")
        elif mode == "fts":
            q = self.table.search(fts_query(query), query_type="fts")
        else:
            from lancedb.rerankers import RRFReranker

            q = (self.table.search(query_type="hybrid").vector(embed([query])[0]).text(fts_query(query))
                 .rerank(RRFReranker(K=rrf_k)))
        if where:
            q = q.where(where, prefilter=True)
        rows = q.limit(k).select(["id", "doc", "text"]).to_list()
        score = {"vector": "_distance", "fts": "_score", "hybrid": "_relevance_score"}[mode]
        return [{"id": r["id"], "doc": r["doc"], "text": r["text"], "score": float(r.get(score, 0.0))} for r in rows]


def open_or_create(path: Path | str, name: str, storage_options: dict[str, str] | None = None) -> ChunkIndex:
    """Open the named table, or create it when the database does not list it. A listed table that
    cannot be read raises: it is never replaced by a new empty one. `path` may be an object-store URI."""
    path = _location(path)
    if is_uri(path):
        try:
            listed = name in _connect(path, storage_options).list_tables().tables
        except Exception as err:  # object_store errors: no bucket, refused credentials, unreachable endpoint
            raise RetrievalError(f"LanceDB location {path} cannot be listed: {str(err).splitlines()[0][:300]}") from None
    else:
        listed = path.is_dir() and name in _connect(path).list_tables().tables
    if listed:
        return ChunkIndex.open(path, name, storage_options)
    log.info("creating LanceDB table %s in %s", name, path)
    return ChunkIndex.create(path, name, storage_options)


class Haystacks:
    """Where each item's context is indexed: item id -> (chunk index, group). A passkey item searches
    only its own haystack (its group); a KB-QA item searches the whole knowledge base."""

    def __init__(self):
        self._where: dict[str, tuple[ChunkIndex, str | None]] = {}

    def add(self, items, index: ChunkIndex, per_item: bool = False) -> None:
        for it in items:
            self._where[it.id] = (index, it.id if per_item else None)

    def search(self, item, k: int, mode: SearchMode = "hybrid", rrf_k: int = 60) -> list[dict]:
        if item.id not in self._where:
            raise RetrievalError(f"item {item.id!r} is in no index: add its suite to the haystacks first")
        index, group = self._where[item.id]
        return index.search(item.question, k, mode, group=group, rrf_k=rrf_k)
