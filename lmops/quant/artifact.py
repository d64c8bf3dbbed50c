"""Saving and reloading quantized variants, and counting their bytes from what was saved.

Two formats, both a directory with the tokenizer, `config.json` and `quant.json`:
- "torch": `weights.pt`, the state dict as saved by `torch.save` (int4 codes, torchao int8 tensors,
  bf16 floats); reloads with `weights_only=True` into a skeleton with `Int4Linear` where listed.
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
    """quant.json of a built scheme: what `load_variant` needs to read it back."""
    return {"scheme": scheme.name, "format": fmt, "kv": None if scheme.kv is None else vars(scheme.kv),
            "weights": type(scheme.weights).__name__, **extra}


def save_variant(model, tokenizer, out: Path, meta: dict) -> None:
    """Write a variant into the (empty, temporary) directory `out`; `meta` goes to quant.json."""
    import torch

    from lmops.quant.int4 import Int4Linear

    tokenizer.save_pretrained(out)
    if meta["format"] == "hf":
        if hasattr(model, "peft_config"):  # keep the adapter beside the quantized base, unmerged
            model.save_pretrained(out / ADAPTER_DIR)
            model = model.unload()
        model.save_pretrained(out)  # bitsandbytes weights + quantization_config
    else:
        model.config.save_pretrained(out)
        meta = {**meta, "int4": {n: {"group_size": m.group_size, "in": m.in_features, "out": m.out_features,
                                     "bias": m.bias is not None,
                                     "lora_rank": 0 if m.lora_A is None else m.lora_A.shape[0]}
                                 for n, m in model.named_modules() if isinstance(m, Int4Linear)},
                "dtype": str(next(p for p in model.state_dict().values()
                                  if p.is_floating_point()).dtype).removeprefix("torch.")}
        torch.save(model.state_dict(), out / WEIGHTS_FILE)
    write_json(out / QUANT_FILE, meta)


def load_variant(model_dir: str | Path):
    """(model, tokenizer, quant meta) of a saved variant, with its real low-bit weights."""
    from lmops.model.build import check_model_dir

    model_dir = check_model_dir(model_dir)
    meta = read_json(model_dir / QUANT_FILE)
    try:
        model, tokenizer = (_load_hf if meta["format"] == "hf" else _load_torch)(model_dir, meta)
    except (OSError, RuntimeError, KeyError, ValueError) as err:
        raise InputError(f"quantized model {model_dir} could not be loaded: {err}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer, meta


def _load_torch(model_dir: Path, meta: dict):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from lmops.quant.api import DTYPES, _set_module
    from lmops.quant.int4 import Int4Linear

    config = AutoConfig.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[meta["dtype"]])
    for name, spec in meta.get("int4", {}).items():
        _set_module(model, name, Int4Linear(spec["in"], spec["out"], spec["group_size"], bias=spec["bias"],
                                            lora_rank=spec["lora_rank"]))
    state = torch.load(model_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state, assign=True, strict=True)
    return model, AutoTokenizer.from_pretrained(model_dir)


def _load_hf(model_dir: Path, meta: dict):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    if (model_dir / ADAPTER_DIR).is_dir():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, model_dir / ADAPTER_DIR)
    return model, AutoTokenizer.from_pretrained(model_dir)
