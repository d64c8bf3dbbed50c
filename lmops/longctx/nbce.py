"""NBCE, naive-Bayes context extension (Su 2023): decode over n context chunks at once.

Each chunk is one batch row (chunk + prompt) with its own KV cache, plus one row holding the prompt
alone. At every step the chunk whose next-token distribution has the lowest entropy (the chunk that
"knows" the answer) is pooled, and the output is

    (beta + 1) * log p(token | pooled chunk) - beta * log p(token | no context)

Naive Bayes gives log p(T|S_1..S_n) = sum_k log p(T|S_k) - (n-1) log p(T), so beta stands in for
n-1; it is clamped to n-1, which makes a single chunk exactly plain decoding. Cost is one forward
per step over n+1 rows: linear in the number of chunks.
"""
from __future__ import annotations

from dataclasses import dataclass

from lmops.model.generate import first_line, left_pad


@dataclass(frozen=True)
class NBCEConfig:
    beta: float = 0.25
    max_new_tokens: int = 8
    sample: bool = False  # greedy by default; sampled decoding draws from softmax(output / temperature)
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.beta < 0:
            raise ValueError(f"NBCE beta must be >= 0, got {self.beta}")
        if self.max_new_tokens < 1:
            raise ValueError("NBCE max_new_tokens must be >= 1")
        if self.temperature <= 0:
            raise ValueError("NBCE temperature must be > 0")


def entropy(logp):
    """Entropy of each row of log-probabilities, shape (n, V) -> (n,)."""
    return -(logp.exp() * logp).sum(-1)


def pool_min_entropy(logp) -> int:
    """Index of the chunk row (n, V) whose distribution is most certain."""
    return int(entropy(logp).argmin())


def nbce_combine(logp_chunks, logp_none, beta: float):
    """Output log-scores (V,) from per-chunk (n, V) and no-context (V,) log-probabilities."""
    b = min(beta, logp_chunks.shape[0] - 1)
    return (b + 1) * logp_chunks[pool_min_entropy(logp_chunks)] - b * logp_none


def nbce_generate(model, tokenizer, chunks: list[str] | list[list[int]], prompt: str,
                  cfg: NBCEConfig = NBCEConfig()) -> str:
    """The continuation of `prompt` given all `chunks` (texts or token ids, each placed before the
    prompt), cut at the first newline as `generate_answers` does."""
    import torch

    if not chunks:
        raise ValueError("NBCE needs at least one context chunk")
    enc = lambda s: s if isinstance(s, list) else tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompt_ids = enc(prompt)
    rows = [prompt_ids] + [enc(c) + prompt_ids for c in chunks]  # row 0: no context
    ids, mask = left_pad(rows, tokenizer.pad_token_id)  # (n+1, T)
    dev = getattr(model, "device", "cpu")  # a stub module in tests has none
    ids, mask = ids.to(dev), mask.to(dev)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    gen = torch.Generator().manual_seed(cfg.seed)
    out: list[int] = []
    past = None
    with torch.no_grad():
        for _ in range(cfg.max_new_tokens):
            res = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=past, use_cache=True)
            past = res.past_key_values
            logp = torch.log_softmax(res.logits[:, -1].float(), dim=-1)  # (n+1, V)
            scores = nbce_combine(logp[1:], logp[0], cfg.beta).cpu()
            if cfg.sample:
                token = int(torch.multinomial(torch.softmax(scores / cfg.temperature, -1), 1, generator=gen))
            else:
                token = int(scores.argmax())
            if token == tokenizer.eos_token_id:
                break
            out.append(token)
            if "\n" in tokenizer.decode(out):
                break
            # Every row continues with the same chosen token, each on its own cache.
            ids = torch.full((len(rows), 1), token, dtype=torch.long, device=dev)
            mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=torch.long, device=dev)], dim=1)
            pos = pos[:, -1:] + 1
    return first_line(tokenizer.decode(out, skip_special_tokens=True))
