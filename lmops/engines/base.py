"""What every engine shares: the exported directory's marker (`engine.json`, with a sha256 of every
file), the export/open wrappers that check it, and the runner interface the frontier and the server use.

An engine module (`lmops/engines/<name>.py`) defines one `EngineSpec` subclass: the pip package it
needs, the bit widths it offers, how to write an export from a Hugging Face directory and how to open
one. Registration is one line in `lmops/engines/registry.py`.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
from pathlib import Path

from lmops.errors import EngineError, EngineNotInstalled, InputError

__all__ = ["EngineError", "EngineNotInstalled", "EngineSpec", "Runner", "export", "open_export", "perplexity"]
log = logging.getLogger("lmops.engines")
MARKER = "engine.json"


class Runner:
    """An opened export. `logits` scores a token window (the perplexity protocol), `prefill` runs a
    prompt through once (prefill timing), `stream` yields (token id, log-prob) greedily or sampled."""

    context: int = 2048

    def logits(self, ids: list[int]):  # (len(ids), vocab) float32 numpy array
        raise NotImplementedError

    def prefill(self, ids: list[int]) -> None:
        raise NotImplementedError

    def stream(self, ids: list[int], max_new: int, temperature: float = 0.0, min_new: int = 0, logprobs: bool = True):
        raise NotImplementedError

    def window_nll(self, ids: list[int]) -> float:
        """Summed negative log-likelihood of ids[1:] given their prefix (one window)."""
        import numpy as np

        lg = self.logits(ids)[:-1].astype(np.float64)
        top = lg.max(axis=1, keepdims=True)
        lse = (top[:, 0] + np.log(np.exp(lg - top).sum(axis=1)))
        return float((lse - lg[np.arange(len(ids) - 1), ids[1:]]).sum())


class EngineSpec:
    name: str = ""
    module: str = ""  # the import name of the engine's package
    package: str = ""  # the pip requirement that installs it
    bits: dict[int, str] = {}  # bit width -> the engine's own type name (from its registration)
    logits: bool = True  # whether the engine exposes logits (perplexity by the lmops protocol)

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def require(self) -> None:
        if not self.installed():
            raise EngineNotInstalled(
                f"engine {self.name!r} is not installed (Python package {self.module!r} missing): "
                f"pip install '{self.package}'  (or `make install`, which installs every engine lmops pins)")

    def check_bits(self, bits: int) -> str:
        if bits not in self.bits:
            raise EngineError(f"engine {self.name!r} offers {sorted(self.bits)} bits, not {bits}")
        return self.bits[bits]

    # ---- what an engine module implements -----------------------------------------------------
    def write(self, src: Path, out: Path, bits: int, group_size: int, variant: Path | None = None) -> None:
        """Write the float model directory `src` in the engine's format; `variant`: the lmops variant
        `src` was dequantized from, for an engine that can take its codes as they are."""
        raise NotImplementedError

    def open_dir(self, path: Path, meta: dict, threads: int) -> Runner:
        raise NotImplementedError


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export(engine: str, src: str | Path, out: str | Path, bits: int, group_size: int = 32) -> Path:
    """Write `src` as `engine`'s format at `bits` into `out`, atomically: the engine's files, the
    tokenizer (chat template included) and `engine.json`. `src` is a Hugging Face model directory or a
    saved lmops variant, whose dequantized weights the engine then rounds onto its own grid
    (`lmops.quant.export`; the marker names the variant)."""
    from transformers import AutoConfig, AutoTokenizer

    from lmops.engines.registry import engine_named
    from lmops.io import atomic_dir, write_json
    from lmops.model.build import check_model_dir
    from lmops.quant.export import as_float_dir

    spec = engine_named(engine)
    spec.require()
    kind = spec.check_bits(bits)
    src = check_model_dir(src)
    out = Path(out)
    with as_float_dir(src) as (float_src, variant), atomic_dir(out) as tmp:
        spec.write(float_src, tmp, bits, group_size, variant=src if variant else None)
        AutoTokenizer.from_pretrained(float_src).save_pretrained(tmp)
        config = AutoConfig.from_pretrained(float_src)
        files = {str(p.relative_to(tmp)): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        write_json(tmp / MARKER, {"engine": spec.name, "bits": bits, "type": kind, "group_size": group_size,
                                  "source": str(src), "variant": variant,
                                  "context": int(getattr(config, "max_position_embeddings", 2048)),
                                  "eos_token_id": config.eos_token_id, "files": files})
    log.info("exported %s to %s (%s, %d bits)", src, out, spec.name, bits)
    return out


def read_marker(path: str | Path) -> dict:
    path = Path(path)
    marker = path / MARKER
    if not marker.is_file():
        raise InputError(f"{path} is not an engine export: {MARKER} is missing")
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
        meta["engine"], meta["files"]  # noqa: B018 - the keys every marker has
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{marker} is corrupt: {err}") from None
    return meta


def verify(path: Path, meta: dict) -> None:
    """Refuse an export whose files differ from what was exported (truncated, overwritten, missing)."""
    for rel, digest in meta["files"].items():
        f = path / rel
        if not f.is_file():
            raise InputError(f"{f} is missing from the {meta['engine']} export {path}")
        if _sha256(f) != digest:
            raise InputError(f"{f} is corrupt: its sha256 differs from the one recorded in {path / MARKER} at export")


def open_export(path: str | Path, threads: int = 1) -> tuple[Runner, dict]:
    """(runner, engine.json) of an export, checked first: the marker, the engine installed, every
    file's checksum; an engine that still fails to load it is reported with the path named."""
    from lmops.engines.registry import engine_named

    path = Path(path)
    meta = read_marker(path)
    spec = engine_named(meta["engine"])
    spec.require()
    verify(path, meta)
    try:
        runner = spec.open_dir(path, meta, threads)
    except Exception as err:  # the engine's own loader: a corrupt model file it did not accept
        raise InputError(f"{spec.name} could not load the export {path}: {type(err).__name__}: {err}") from None
    runner.context = int(meta.get("context") or 2048)
    return runner, meta


def perplexity(runner: Runner, ids: list[int], max_length: int) -> float:
    """`lmops.quant.kv.window_perplexity`'s protocol: non-overlapping `max_length` windows."""
    nll, count = 0.0, 0
    for begin in range(0, len(ids) - 1, max_length):
        window = ids[begin:begin + max_length]
        if len(window) < 2:
            break
        nll += runner.window_nll(window)
        count += len(window) - 1
    return math.exp(nll / max(1, count))


def export_bytes(path: str | Path) -> int:
    """Bytes on disk of the engine's files (the weights and graph; not the tokenizer or the marker)."""
    meta = read_marker(path)
    tokenizer = {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                 "vocabulary.json", "vocabulary.txt", "genai_config.json", MARKER}
    return sum((Path(path) / rel).stat().st_size for rel in meta["files"] if Path(rel).name not in tokenizer)
