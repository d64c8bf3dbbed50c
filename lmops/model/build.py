"""Tokenizer and model construction: train a tokenizer on the corpus, build a model from params,
or load any Hugging Face causal-LM directory."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from lmops.io import InputError
from lmops.params import ArchParams

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

EOS, PAD = "<eos>", "<pad>"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> "PreTrainedTokenizerFast":
    """Byte-level BPE with single-digit tokens, so any number is copyable digit by digit."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, bos_token=EOS)


def config_for(arch: ArchParams, vocab_size: int, context: int, tokenizer) -> "object":
    from transformers import AutoConfig

    # Tiny models tie input and output embeddings: at this size the embedding is most of the weights.
    return AutoConfig.for_model(
        arch.type, vocab_size=vocab_size, hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.layers, num_attention_heads=arch.heads, num_key_value_heads=arch.kv_heads,
        max_position_embeddings=context, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)


def build_model(arch: ArchParams, tokenizer, context: int, seed: int) -> "PreTrainedModel":
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config_for(arch, len(tokenizer), context, tokenizer))


def check_model_dir(path: str | Path) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise InputError(f"model directory {path} is missing or has no config.json "
                         "(train.base must be 'scratch' or a Hugging Face causal-LM directory)")
    return path


def resolve_device(setting: str = "auto") -> str:
    """The `device` param: "auto" = "cuda" when a GPU is visible, else "cpu"; "cuda" without one is an error."""
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise InputError("device: cuda, but torch sees no CUDA GPU (use device: auto or cpu)")
    return setting


def load_model(path: str | Path, device: str | None = None, **kwargs) -> tuple["PreTrainedModel", "PreTrainedTokenizerFast"]:
    """Load a causal LM and its tokenizer; a corrupt directory raises InputError naming it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = check_model_dir(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError, RuntimeError) as err:
        raise InputError(f"model directory {path} could not be loaded: {err}") from None
    if tokenizer.pad_token is None:  # many released models ship without one
        tokenizer.pad_token = tokenizer.eos_token
    if device:
        model = model.to(device)
    return model.eval(), tokenizer


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def save_model(model, tokenizer, out: str | Path, stats: dict) -> Path:
    """Write a Hugging Face directory (weights, tokenizer, `train_stats.json`) atomically to `out`."""
    from lmops.io import atomic_dir, write_json
    from lmops.layout import TRAIN_STATS

    out = Path(out)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / TRAIN_STATS, stats)
    return out
