"""Batched greedy generation with left padding: the one helper that evaluation, long context and the
prompt harness decode through. Decoder-only models continue from the right edge, so every row of a
batch is padded on the left and masked."""
from __future__ import annotations

from collections.abc import Callable


def first_line(text: str) -> str:
    return text.split("\n", 1)[0].strip()


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat_prompt(tokenizer, content: str, lead: str = "", system: str | None = None) -> str:
    """`content` as one user turn through the tokenizer's chat template, the assistant turn opened
    (and started with `lead`, when given, which the model continues). Text with the template's
    special tokens; tokenize it with `add_special_tokens=False`."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return text + lead


def left_pad(rows: list[list[int]], pad_id: int):
    """(ids, mask), both (B, T) long tensors, for token rows of different lengths."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask


def generate_rows(model, tokenizer, rows: list[list[int]], max_new_tokens: int, batch_size: int = 16,
                  cut: Callable[[str], str] | None = first_line, progress: bool = False, desc: str = "generate",
                  **generate_kwargs) -> list[str]:
    """Greedy (or, with `do_sample=True` in `generate_kwargs`, sampled) continuation of each token row,
    decoded and passed through `cut` (default: the first line)."""
    import torch
    from tqdm.auto import tqdm

    kwargs = {"do_sample": False, **generate_kwargs}
    cache_factory = kwargs.pop("cache_factory", None)  # model -> a fresh cache for each generate() call
    if "stop_strings" in kwargs:
        kwargs["tokenizer"] = tokenizer  # transformers matches stop strings through the tokenizer
    out: list[str] = []
    for i in tqdm(range(0, len(rows), batch_size), desc=desc, disable=not progress, leave=False):
        ids, mask = left_pad(rows[i:i + batch_size], tokenizer.pad_token_id)
        with torch.no_grad():
            extra = {"past_key_values": cache_factory(model)} if cache_factory else {}
            gen = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                                 max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **kwargs, **extra)
        texts = tokenizer.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)
        out += [cut(t) if cut else t for t in texts]
    return out


def generate_texts(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 16,
                   **kwargs) -> list[str]:
    """`generate_rows` on prompts given as text (tokenized without special tokens)."""
    rows = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    return generate_rows(model, tokenizer, rows, max_new_tokens, batch_size, **kwargs)
