"""LoRA fine-tune of the champion on the retraining texts, merged back into a plain model."""
from __future__ import annotations

import random

from lmops.params import RetrainParams

# Every linear layer of a LLaMA/Qwen/Mistral block: at this size the MLP carries most of the facts.
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def mix_replay(new: list[str], old: list[str], share: float, seed: int) -> list[str]:
    """`new` plus old training texts making `share` of the mix (a guard against forgetting), in
    rounds: each round is `new` and a fresh slice of the shuffled old texts, so the fine-tune sees
    many different old texts once instead of one small sample every epoch (measured on the
    pretrained checkpoint: old_test_qa -6 -> -1 point at the same share and steps)."""
    k = min(len(old), int(len(new) * share / (1 - share))) if share else 0
    if not k:
        return list(new)
    shuffled = random.Random(seed).sample(old, len(old))
    return [t for r in range(len(old) // k) for t in (*new, *shuffled[r * k:(r + 1) * k])]


def lora_finetune(model, tokenizer, texts: list[str], p: RetrainParams):
    """Train LoRA adapters on `texts` and merge them: returns (merged model, TrainResult)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from lmops.model.train import TrainConfig, train_lm

    torch.manual_seed(p.seed)  # the adapters' initialisation: the same snapshot retrains the same model
    config = LoraConfig(r=p.lora_r, lora_alpha=p.lora_alpha, lora_dropout=0.0, target_modules=TARGETS,
                        task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    result = train_lm(peft_model, tokenizer, texts, TrainConfig(context=p.context, steps=p.steps, batch_size=p.batch_size,
                                                                lr=p.lr, warmup=max(1, p.steps // 10), seed=p.seed,
                                                                threads=p.threads, desc="retrain (LoRA)"))
    return peft_model.merge_and_unload(), result

