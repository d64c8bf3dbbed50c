"""The embedded default corpus: generate it (`build_corpus`) and read it back (`Corpus`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmops.io import InputError, atomic_dir, read_jsonl, write_json, write_jsonl
from lmops.params import DataParams

FILES = ("documents", "qa", "incidents", "recall", "entities", "ood")


def build_corpus(p: DataParams, out_dir: str | Path) -> dict[str, int]:
    """Generate the corpus into `out_dir` (atomically, as one directory) and return row counts."""
    from lmops.data.generate import generate

    corpus = generate(p.seed, p.entities, p.incidents_per_entity, p.recall_items, p.recall_filler,
                      p.ood_sentences, (p.val_share, p.test_share))
    corpus["ood"] = [{"text": t} for t in corpus["ood"]]
    with atomic_dir(out_dir) as tmp:
        for name in FILES:
            write_jsonl(tmp / f"{name}.jsonl", corpus[name])
        counts = {name: len(corpus[name]) for name in FILES}
        write_json(tmp / "manifest.json", {"params": p.model_dump(mode="json"), "counts": counts})
    return counts


@dataclass
class Corpus:
    documents: list[dict]
    qa: list[dict]
    incidents: list[dict]
    recall: list[dict]
    entities: list[dict]
    ood: list[dict]

    @classmethod
    def load(cls, path: str | Path) -> "Corpus":
        path = Path(path)
        if not path.is_dir():
            raise InputError(f"corpus directory {path} is missing: run `lmops stage data` (or `dvc repro data`)")
        rows = {name: read_jsonl(path / f"{name}.jsonl") for name in FILES}
        for name, got in rows.items():
            if not got:
                raise InputError(f"{path / (name + '.jsonl')} is empty: rebuild the corpus (`dvc repro data`)")
        return cls(**rows)

    def split(self, rows: list[dict], split: str) -> list[dict]:
        out = [r for r in rows if r.get("split") == split]
        if not out:
            raise InputError(f"the corpus has no rows in split {split!r}")
        return out
