"""Saving and reloading quantized variants, and counting their bytes from what was saved.

Saving and loading dispatch to the variant's method (`lmops.quant.registry`, by the config type that
quant.json records). Two formats, both a directory with the tokenizer, `config.json` and `quant.json`:
- "torch": `weights.pt`, the state dict as saved by `torch.save` (int4 codes, torchao int8 tensors,
  bf16 floats); reloads with `weights_only=True` into a skeleton the method completes (e.g. `Int4Linear`).
- "hf": a bitsandbytes model's own `save_pretrained` (quantization_config in config.json), plus an
  optional peft adapter in `adapter/`.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from lmops.io import InputError, read_json, write_json

QUANT_FILE = "quant.json"
WEIGHTS_FILE = "weights.pt"
ADAPTER_DIR = "adapter"


def tensor_bytes(obj, seen: set | None = None) -> int:
    """Bytes held by the tensors in `obj` (a tensor, tensor subclass, dict, list or tuple), each
    storage counted once, so tied weights and views are not double-counted. Tensor subclasses
    (torchao int8) are opened into their inner tensors (codes, scales, zero points)."""
    import torch

    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        if type(obj) is not torch.Tensor and type(obj) is not torch.nn.Parameter and hasattr(obj, "__tensor_flatten__"):
            names, _ = obj.__tensor_flatten__()
            return sum(tensor_bytes(getattr(obj, n), seen) for n in names)
        storage = obj.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key in seen or obj.device.type == "meta":
            return 0
        seen.add(key)
        return storage.nbytes()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v, seen) for v in obj)
    return 0


def safetensors_bytes(path: Path) -> int:
    """Tensor bytes of a .safetensors file, read from its header (data offsets of every tensor)."""
    with path.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    return sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__")


def saved_weight_bytes(model_dir: str | Path) -> int:
    """Every saved weight byte of a variant: codes, scales, zero points, adapters, float tensors."""
    import torch

    model_dir = Path(model_dir)
    total = sum(safetensors_bytes(p) for p in sorted(model_dir.rglob("*.safetensors")))
    if (model_dir / WEIGHTS_FILE).exists():
        total += tensor_bytes(torch.load(model_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    if not total:
        raise InputError(f"{model_dir} holds no saved weights")
    return total


def variant_meta(scheme, fmt: str, **extra) -> dict:
    """quant.json of a built scheme: what `load_variant` needs to read it back ("weights" names the
    config type, hence the method's handler), and the settings the method reports ("config")."""
    from lmops.quant.registry import method_for

    return {"scheme": scheme.name, "format": fmt, "kv": None if scheme.kv is None else vars(scheme.kv),
            "weights": type(scheme.weights).__name__, "config": method_for(scheme.weights).describe(scheme.weights),
            **extra}


def save_variant(model, tokenizer, out: Path, meta: dict) -> None:
    """Write a variant into the (empty, temporary) directory `out` through its method's handler;
    `meta` (from `variant_meta`) and what the handler adds go to quant.json."""
    from lmops.quant.registry import method_named

    extra = method_named(meta["weights"]).save(model, tokenizer, out)
    write_json(out / QUANT_FILE, {**meta, **extra})


def load_variant(model_dir: str | Path):
    """(model, tokenizer, quant meta) of a saved variant, with its real low-bit weights."""
    from lmops.model.build import check_model_dir
    from lmops.quant.registry import method_named

    model_dir = check_model_dir(model_dir)
    meta = read_json(model_dir / QUANT_FILE)
    try:
        model, tokenizer = method_named(meta["weights"]).load(model_dir, meta)
    except (OSError, RuntimeError, KeyError, ValueError) as err:
        raise InputError(f"quantized model {model_dir} could not be loaded: {err}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if meta.get("kv"):  # the variant's KV-cache setting travels with the model (serving reads it)
        from lmops.quant.config import KVCacheConfig

        model.lmops_kv = KVCacheConfig(**meta["kv"])
    return model.eval(), tokenizer, meta


# The two on-disk formats; a method picks one (`QuantMethod.fmt`) and adds its own modules' rebuild.

def save_torch(model, tokenizer, out: Path) -> dict:
    """`weights.pt` (the state dict, as `torch.save` writes it), config.json and the tokenizer;
    returns the meta `load_torch` needs (the float dtype)."""
    import torch

    tokenizer.save_pretrained(out)
    model.config.save_pretrained(out)
    torch.save(model.state_dict(), out / WEIGHTS_FILE)
    return {"dtype": str(next(p for p in model.state_dict().values()
                              if p.is_floating_point()).dtype).removeprefix("torch.")}


def load_torch(model_dir: Path, meta: dict, skeleton=None):
    """A float skeleton from config.json, `skeleton(model, meta)` to put the method's own modules in,
    then the saved state dict loaded into it (`weights_only=True`, strict)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from lmops.quant.api import DTYPES

    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir), dtype=DTYPES[meta["dtype"]])
    if skeleton is not None:
        skeleton(model, meta)
    state = torch.load(model_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state, assign=True, strict=True)
    return model, AutoTokenizer.from_pretrained(model_dir)


def save_hf(model, tokenizer, out: Path) -> dict:
    """The model's own `save_pretrained` (e.g. bitsandbytes weights + quantization_config), a peft
    adapter kept unmerged in `adapter/`."""
    tokenizer.save_pretrained(out)
    if hasattr(model, "peft_config"):
        model.save_pretrained(out / ADAPTER_DIR)
        model = model.unload()
    model.save_pretrained(out)
    return {}


def load_hf(model_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    if (model_dir / ADAPTER_DIR).is_dir():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, model_dir / ADAPTER_DIR)
    return model, AutoTokenizer.from_pretrained(model_dir)
