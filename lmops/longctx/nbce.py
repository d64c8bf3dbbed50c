"""NBCE, naive-Bayes context extension (Su 2023): decode over n context chunks at once.

Each chunk is one row (chunk + prompt) with its own KV cache, plus one row holding the prompt alone.
Naive Bayes gives log p(T|S_1..S_n) = sum_k log p(T|S_k) - (n-1) log p(T); NBCE replaces the sum by
one pooled chunk and n-1 by beta. Two rules, compared on the same items:

- `NBCEConfig` (the simplified rule, `nbce`): pool the chunk whose full next-token distribution has the
  lowest entropy, output `(beta + 1) * log p(. | pooled) - beta * log p(. | no context)` with beta
  clamped to n-1 (so a single chunk is exactly plain decoding);
- `NBCERefConfig` (the reference rule, `nbce_ref`, Su Jianlin's bojone/NBCE): every row's
  log-probabilities are top-p truncated first (HF `TopPLogitsWarper`: tokens outside the nucleus get
  -inf); the pooled chunk minimises the entropy of its *truncated* distribution, less a stickiness
  bonus `eta` for the chunk chosen at the previous step; the combination with beta (not clamped) is
  applied only inside the no-context row's nucleus, elsewhere the pooled row's log-probabilities stand.

The reference samples from the result; here decoding is greedy unless `sample` is set (exact match).
Rows are prefilled one at a time (`logits_to_keep=1`, no padding), so cost is linear in the number of
chunks and memory is one chunk's activations; every decoding step is one token per row.
"""
from __future__ import annotations

from dataclasses import dataclass

from lmops.model.generate import first_line

NEG = -100.0  # the reference's clip floor: log-probabilities at or below it count as outside a nucleus


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

    def combine(self, logp, prev: int | None):
        """(output log-scores (V,), pooled chunk index) from log-probabilities (n+1, V), row 0 = no context."""
        k = pool_min_entropy(logp[1:])
        return nbce_combine(logp[1:], logp[0], self.beta), k


@dataclass(frozen=True)
class NBCERefConfig(NBCEConfig):
    eta: float = 0.1  # stickiness: entropy bonus of the chunk chosen at the previous step
    top_p: float = 0.95  # nucleus of every row before entropy and combination

    def __post_init__(self):
        super().__post_init__()
        if self.eta < 0:
            raise ValueError(f"NBCE eta must be >= 0, got {self.eta}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"NBCE top_p must be in (0, 1], got {self.top_p}")

    def combine(self, logp, prev: int | None):
        return nbce_ref_combine(logp[1:], logp[0], self.beta, self.eta, self.top_p, prev)


def entropy(logp):
    """Entropy of each row of log-probabilities, shape (n, V) -> (n,); -inf entries contribute 0."""
    return -(logp.exp() * logp.clamp(min=NEG)).sum(-1)


def pool_min_entropy(logp) -> int:
    """Index of the chunk row (n, V) whose distribution is most certain."""
    return int(entropy(logp).argmin())


def nbce_combine(logp_chunks, logp_none, beta: float):
    """Output log-scores (V,) from per-chunk (n, V) and no-context (V,) log-probabilities."""
    b = min(beta, logp_chunks.shape[0] - 1)
    return (b + 1) * logp_chunks[pool_min_entropy(logp_chunks)] - b * logp_none


def top_p_truncate(logp, top_p: float):
    """Log-probabilities (.., V) with every token outside the top-p nucleus set to -inf, as HF's
    `TopPLogitsWarper`: a token stays when the probability mass strictly above it is < top_p (the
    most likely token always stays). Not renormalised, as in the reference."""
    import torch

    if top_p >= 1:
        return logp
    sorted_lp, order = logp.sort(dim=-1, descending=True)
    above = sorted_lp.exp().cumsum(-1) - sorted_lp.exp()  # mass of the strictly more likely tokens
    drop_sorted = above >= top_p
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logp.masked_fill(drop, float("-inf"))


def nbce_ref_combine(logp_chunks, logp_none, beta: float, eta: float, top_p: float, prev: int | None):
    """The reference rule on one step: (output log-scores (V,), pooled chunk index).

    `logp_chunks` (n, V) and `logp_none` (V,) are full log-softmaxes; `prev` is the chunk pooled at the
    previous step (None at the first step)."""
    import torch

    chunks, none = top_p_truncate(logp_chunks, top_p), top_p_truncate(logp_none, top_p)
    ent = entropy(chunks)
    if prev is not None:
        ent[prev] -= eta
    k = int(ent.argmin())
    pooled = chunks[k]
    merged = (1 + beta) * pooled - beta * none
    return torch.where(none > NEG, merged, pooled), k


def _encode(tokenizer, s) -> list[int]:
    return list(s) if not isinstance(s, str) else tokenizer(s, add_special_tokens=False)["input_ids"]


def nbce_generate(model, tokenizer, chunks: list[str] | list[list[int]], prompt, cfg: NBCEConfig = NBCEConfig(),
                  head=()) -> str:
    """The continuation of `prompt` given all `chunks` (texts or token ids), each row being
    `head + chunk + prompt` (`head`: e.g. a chat template's opening, before the context), the
    no-context row `head + prompt`; cut at the first newline as `generate_answers` does."""
    import torch

    if not chunks:
        raise ValueError("NBCE needs at least one context chunk")
    prompt_ids, head_ids = _encode(tokenizer, prompt), _encode(tokenizer, head)
    rows = [head_ids + prompt_ids] + [head_ids + _encode(tokenizer, c) + prompt_ids for c in chunks]
    device = getattr(model, "device", "cpu")  # a stub module in tests has none
    gen = torch.Generator().manual_seed(cfg.seed)
    out: list[int] = []
    caches: list = [None] * len(rows)
    lengths = [len(r) for r in rows]
    step_ids = [torch.tensor([r], dtype=torch.long) for r in rows]
    prev = None
    with torch.inference_mode():
        for _ in range(cfg.max_new_tokens):
            last = []
            for i in range(len(rows)):
                n = step_ids[i].shape[1]
                pos = torch.arange(lengths[i] - n, lengths[i]).unsqueeze(0)
                res = model(input_ids=step_ids[i].to(device), position_ids=pos.to(device),
                            past_key_values=caches[i], use_cache=True, logits_to_keep=1)
                caches[i] = res.past_key_values
                last.append(res.logits[0, -1].float().cpu())
            logp = torch.log_softmax(torch.stack(last), dim=-1)  # (n+1, V)
            scores, prev = cfg.combine(logp, prev)
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
            step_ids = [torch.tensor([[token]], dtype=torch.long)] * len(rows)
            lengths = [n + 1 for n in lengths]
    return first_line(tokenizer.decode(out, skip_special_tokens=True))
