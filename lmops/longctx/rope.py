"""RoPE position scaling through transformers' `config.rope_parameters` (linear position
interpolation, dynamic NTK, YaRN), and the short position-interpolation fine-tune of Chen et al. 2023.

`scale_rope_(model, cfg)` rewrites the config and rebuilds the rotary module in place, so the model's
own attention code applies the scaled frequencies: nothing here re-implements attention.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

RopeType = Literal["linear", "dynamic", "yarn"]


@dataclass(frozen=True)
class RopeConfig:
    """One scaling variant. `factor` is how far the trained context is stretched; `trained` is the
    context the model was trained with (HF's `max_position_embeddings` / YaRN's original length)."""
    type: RopeType
    factor: float
    trained: int

    def __post_init__(self):
        if self.type not in ("linear", "dynamic", "yarn"):
            raise ValueError(f"unknown RoPE scaling type {self.type!r}: use linear, dynamic or yarn")
        if self.factor < 1:
            raise ValueError(f"RoPE factor must be >= 1, got {self.factor}")
        if self.trained < 1:
            raise ValueError(f"trained context must be >= 1, got {self.trained}")

    def rope_parameters(self, theta: float) -> dict:
        """The transformers 5 `rope_parameters` dict for this variant."""
        params = {"rope_type": self.type, "factor": float(self.factor), "rope_theta": float(theta)}
        if self.type == "yarn":
            # YaRN needs the pre-extension length to place its ramp between beta_fast and beta_slow.
            params["original_max_position_embeddings"] = self.trained
        return params


def _per_layer_type(rp: dict) -> bool:
    """Gemma 3 style: one RoPE dict per attention layer type (local sliding layers, global full layers)."""
    return "full_attention" in rp and isinstance(rp["full_attention"], dict)


def base_theta(config) -> float:
    """The model's own RoPE base (of its global, full-attention layers when they differ by layer type)."""
    rp = getattr(config, "rope_parameters", None) or {}
    if _per_layer_type(rp):
        rp = rp["full_attention"]
    return float(rp.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _rotary_device(rotary):
    return next(iter(rotary.buffers())).device


def scale_rope_(model, cfg: RopeConfig):
    """Switch `model` (in place) to scaled RoPE; returns it. The rotary module's buffers are not saved
    weights, so rebuilding it from the new config is all a scaling change needs."""
    config = model.config
    rp = getattr(config, "rope_parameters", None) or {}
    if _per_layer_type(rp):  # sliding layers attend within their window: only the global layers are stretched
        config.rope_parameters = {**rp, "full_attention": cfg.rope_parameters(base_theta(config))}
    else:
        config.rope_parameters = cfg.rope_parameters(base_theta(config))
    # Dynamic NTK grows the base once a sequence passes `max_position_embeddings`: keep it the trained length.
    config.max_position_embeddings = cfg.trained
    inner = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    old = inner.rotary_emb
    inner.rotary_emb = type(old)(config=config).to(_rotary_device(old))
    return model


def scaled_copy(model, cfg: RopeConfig | None):
    """A deep copy with scaled RoPE (or an unchanged copy for `cfg=None`); the original is untouched."""
    out = copy.deepcopy(model)
    return scale_rope_(out, cfg) if cfg is not None else out


def inv_freq(model):
    """The rotary inverse frequencies currently in use, shape (head_dim/2,)."""
    inner = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    rot = inner.rotary_emb
    if hasattr(rot, "inv_freq"):
        return rot.inv_freq.detach().clone(), float(rot.attention_scaling)
    return rot.full_attention_inv_freq.detach().clone(), float(rot.full_attention_attention_scaling)
