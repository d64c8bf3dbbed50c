"""`lmops stage data`: generate the embedded corpus (train/val/test split by entity)."""
from __future__ import annotations

from pathlib import Path

from lmops.layout import CORPUS
from lmops.params import Params


def run(p: Params, root: Path) -> dict:
    from lmops.data import build_corpus

    counts = build_corpus(p.data, root / CORPUS)
    return {"corpus": str(CORPUS), **counts}
