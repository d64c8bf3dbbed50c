"""Pattern 1, route then refine: a prompt-quality classifier (logistic regression on MiniLM
embeddings) predicts whether the model will answer a raw prompt correctly; prompts it scores low go
to a neural refiner (a LoRA adapter on the base model) that rewrites the request into the question
format the production template expects; the rest go straight to the model."""
from __future__ import annotations

import copy
import random
from dataclasses import dataclass

from tqdm.auto import tqdm

from lmops.embed import load_embedder
from lmops.prompts.raw import RawPrompt
from lmops.prompts.templates import Template

# ---- quality classifier -------------------------------------------------------------------------

def embed(raws: list[RawPrompt], encoder=None):
    """Features: MiniLM embeddings of the whole message and of its last line (where a prompt's cue,
    "Answer:" or "Category:", lives, and which a whole-message embedding dilutes away), plus one flag
    for a pasted document. (Embedding the document itself costs most of the encoder time and adds
    nothing: every document reads alike.) Shape (N, 769)."""
    import numpy as np

    encoder = encoder or load_embedder()
    whole = encoder.encode([r.request for r in raws], batch_size=64, normalize_embeddings=True)
    tail = encoder.encode([r.request.strip().rsplit("\n", 1)[-1][-80:] for r in raws], batch_size=64,
                          normalize_embeddings=True)
    has_context = np.array([[1.0 if r.context.strip() else 0.0] for r in raws], dtype=whole.dtype)
    return np.concatenate([whole, tail, has_context], axis=1)


class QualityClassifier:
    """P(the model answers this raw prompt correctly)."""

    def fit(self, x, y: list[bool]) -> "QualityClassifier":
        from sklearn.linear_model import LogisticRegression

        self.constant = None if len(set(y)) > 1 else float(y[0])  # one class: nothing to learn
        if self.constant is None:
            self.model = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced").fit(x, y)
        return self

    def predict(self, x) -> list[float]:
        if self.constant is not None:
            return [self.constant] * len(x)
        return [float(p) for p in self.model.predict_proba(x)[:, 1]]


def roc_auc(y: list[bool], scores: list[float]) -> float | None:
    if len(set(y)) < 2:
        return None  # undefined with one class
    from sklearn.metrics import roc_auc_score

    return round(float(roc_auc_score(y, scores)), 4)


# ---- neural refiner -------------------------------------------------------------------------------

@dataclass(frozen=True)
class RefinerConfig:
    rank: int = 8
    alpha: int = 16
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3
    max_new_tokens: int = 32
    seed: int = 0


def train_refiner(model, tokenizer, template: Template, pairs: list[tuple[str, str]], cfg: RefinerConfig,
                  progress: bool = True):
    """A LoRA adapter on a copy of `model`, trained on (raw request -> clean question) pairs with the
    loss on the rewrite only. Returns the adapted model (the base model is left untouched)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    refiner = get_peft_model(copy.deepcopy(model), lora)
    rows = []
    for request, target in pairs:
        prompt_ids = tokenizer(template.render(request=request), add_special_tokens=False)["input_ids"]
        target_ids = tokenizer(" " + target + "\n", add_special_tokens=False)["input_ids"]
        rows.append((prompt_ids + target_ids, [-100] * len(prompt_ids) + target_ids))
    opt = torch.optim.AdamW([p for p in refiner.parameters() if p.requires_grad], lr=cfg.lr)
    pad = tokenizer.pad_token_id
    refiner.train()
    for step in tqdm(range(cfg.steps), desc="refiner LoRA", disable=not progress):
        batch = rng.sample(rows, min(cfg.batch_size, len(rows)))
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([r + [pad] * (width - len(r)) for r, _ in batch])  # (B, T)
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r, _ in batch])
        for g in opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, (step + 1) / 20) * (1 - step / cfg.steps * 0.9)
        loss = refiner(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return refiner.eval()


def refine(refiner_backend, template: Template, raws: list[RawPrompt], max_new_tokens: int) -> list[str]:
    """The rewritten request of each raw prompt."""
    return refiner_backend.generate([template.render(request=r.request) for r in raws], max_new_tokens)


# ---- routing -----------------------------------------------------------------------------------

def routed(direct: list[bool], refined: list[bool], p_correct: list[float], threshold: float) -> tuple[float, float]:
    """(accuracy, share routed) when prompts with P(correct) < threshold go to the refiner."""
    route = [p < threshold for p in p_correct]
    hits = [r_ok if r else d_ok for d_ok, r_ok, r in zip(direct, refined, route)]
    return sum(hits) / len(hits), sum(route) / len(route)


def pick_threshold(direct: list[bool], refined: list[bool], p_correct: list[float]) -> float:
    """The threshold with the best routed accuracy on dev; ties go to refining fewer prompts."""
    candidates = sorted({0.0, 1.0 + 1e-9, *p_correct})
    return max(candidates, key=lambda t: (routed(direct, refined, p_correct, t)[0], -routed(direct, refined, p_correct, t)[1]))
