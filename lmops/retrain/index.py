"""The knowledge index retraining keeps up to date: a LanceDB chunk table (`lmops.longctx.retrieval`)
of the domain documents, which the gate's open-book evaluation searches.

The first retraining creates it from the corpus' documents (what the champion was built on: its
version is the champion's index); each retraining then adds the drifted topic's new documents
(incremental: documents already in the table are skipped) and records the version before and after.
LanceDB keeps every version, so the champion is judged on the index as it was and the challenger on
the index as it will be: a champion with a stale index and a challenger with a fresh one, the way
they would serve. Only documents are indexed, never questions or answers written for training.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from lmops.params import Params

log = logging.getLogger("lmops.retrain")


@dataclass(frozen=True)
class IndexUpdate:
    path: str
    before: int  # the version the champion is judged on
    after: int  # the version with the new documents (the challenger's)
    added_documents: int
    added_chunks: int
    chunks: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def chunk_config(p: Params):
    from lmops.longctx.chunking import ChunkConfig

    r = p.long_context.retrieval  # one home for chunking and search settings
    return ChunkConfig(r.chunk_tokens, r.overlap)


def document_rows(docs: list[dict]) -> list[dict]:
    return [{"id": d["id"], "text": d["text"], "group": d.get("entity", "")} for d in docs]


def update(p: Params, root: Path, new_docs: list[dict], tokenizer, corpus_docs: list[dict] | None = None) -> IndexUpdate:
    """Open (or create and fill with `corpus_docs`) the knowledge index, then add `new_docs`."""
    from lmops.layout import KNOWLEDGE_INDEX
    from lmops.longctx.retrieval import open_or_create

    path = root / KNOWLEDGE_INDEX
    index = open_or_create(path, "knowledge")
    cfg = chunk_config(p)
    if not len(index) and corpus_docs:
        n = index.add_documents(document_rows(corpus_docs), tokenizer, cfg, progress=True)
        log.info("knowledge index created from %d corpus documents (%d chunks)", len(corpus_docs), n)
    before = index.version
    known = index.doc_ids()
    rows = document_rows(new_docs)
    added = index.add_documents(rows, tokenizer, cfg, progress=True)
    log.info("knowledge index: %d new documents, %d chunks (version %d -> %d)",
             sum(r["id"] not in known for r in rows), added, before, index.version)
    return IndexUpdate(str(path), before, index.version, sum(r["id"] not in known for r in rows), added, len(index))


class Retriever:
    """Top-k search on one version of the knowledge index."""

    def __init__(self, path: str | Path, version: int, p: Params):
        from lmops.longctx.retrieval import ChunkIndex

        self.index = ChunkIndex.open(path, "knowledge")
        self.index.table.checkout(version)  # LanceDB time travel: read-only view of that version
        self.version, self.k, r = version, p.drift.retrain.index_top_k, p.long_context.retrieval
        self.mode, self.rrf_k = r.mode, r.rrf_k

    def context(self, question: str) -> str:
        hits = self.index.search(question, self.k, self.mode, rrf_k=self.rrf_k) if len(self.index) else []
        return "\n".join(h["text"].strip() for h in hits)

    def texts(self) -> list[str]:
        return self.index.table.to_arrow().column("text").to_pylist() if len(self.index) else []
