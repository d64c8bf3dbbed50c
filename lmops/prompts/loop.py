"""Pattern 2, the self-refining loop (APE/OPRO style).

Each round the model proposes new instructions from a meta-prompt that lists the scored history
(an instruct model through its own chat template: `prompts/meta_opro_chat.yaml`),
and mutation operators from the template library add candidates (rephrase, add/remove a few-shot
example, reorder, change format). Candidates are scored on a fixed dev minibatch; the loop stops on
its round budget or a plateau, and the finalists are re-scored on the full dev split to pick the
winner. The loop only ever reads the train split (few-shot examples) and the dev split.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from tqdm.auto import tqdm

from lmops.prompts.harness import PromptSpec, TaskData, examples_from, score
from lmops.prompts.templates import Template, formats_for


@dataclass(frozen=True)
class LoopConfig:
    rounds: int = 6  # budget: rounds of proposals
    model_proposals: int = 2  # candidates per round written by the model from the meta-prompt
    mutations: int = 3  # candidates per round from mutation operators
    minibatch: int = 32  # dev items each candidate is scored on
    patience: int = 3  # stop after this many rounds without a better minibatch score
    finalists: int = 3  # top candidates re-scored on the full dev split
    max_shots: int = 2  # few-shot examples are long; the base model's context is 256 tokens
    temperature: float = 1.0  # sampling temperature of the model's proposals
    seed: int = 0

    def __post_init__(self):
        if self.rounds < 1 or self.minibatch < 1 or self.finalists < 1 or self.patience < 1:
            raise ValueError("rounds, minibatch, finalists and patience must be >= 1")


@dataclass
class Candidate:
    spec: PromptSpec
    score: float  # dev minibatch score
    round: int
    source: str  # seed | model | <operator name>


@dataclass
class LoopResult:
    seed: PromptSpec
    best: PromptSpec
    seed_dev: float
    best_dev: float
    rounds: int
    candidates_scored: int
    history: list[Candidate] = field(default_factory=list)
    trajectory: list[dict] = field(default_factory=list)  # per round: best so far and round best


Mutation = Callable[[PromptSpec, random.Random, dict], PromptSpec]

MUTATIONS: dict[str, Mutation] = {
    "rephrase": lambda s, rng, ctx: replace(s, instruction=rng.choice([p for p in ctx["phrases"] if p != s.instruction] or [""])),
    "add_shot": lambda s, rng, ctx: replace(s, shots=min(ctx["max_shots"], s.shots + 1)),
    "remove_shot": lambda s, rng, ctx: replace(s, shots=max(0, s.shots - 1)),
    "reorder": lambda s, rng, ctx: replace(s, question_first=not s.question_first),
    "change_format": lambda s, rng, ctx: replace(s, format=rng.choice([f for f in ctx["formats"] if f != s.format] or [s.format])),
}


def propose_instructions(backend, meta: Template, description: str, history: list[Candidate], n: int,
                         temperature: float, seed: int, chat_meta: Template | None = None) -> list[str]:
    """OPRO step: the model continues a meta-prompt listing past instructions, worst to best. An
    instruct model (a backend with a chat template) gets `chat_meta` as one user turn of its own
    template instead, and replies with the new instruction."""
    best_by_instruction: dict[str, float] = {}
    for c in history:
        best_by_instruction[c.spec.instruction] = max(c.score, best_by_instruction.get(c.spec.instruction, 0.0))
    shown = sorted(best_by_instruction.items(), key=lambda kv: kv[1])[-8:]
    rows = [{"instruction": i, "score": s} for i, s in shown]
    if chat_meta is not None and getattr(backend, "chat", False):
        prompt = backend.chat_turn(chat_meta.render(task_description=description, history=rows))
        outs = backend.generate([prompt] * n, 40, temperature=temperature, seed=seed)
        outs = [o.strip().removeprefix("Instruction:").strip().strip('"') for o in outs]
    else:
        prompt = meta.render(task_description=description, history=rows)
        outs = backend.generate([prompt] * n, 24, temperature=temperature, seed=seed)
    # Keep printable text only: a small model's samples can hold stray bytes that no template wants.
    return ["".join(ch for ch in o if ch.isprintable()).strip()[:120] for o in outs]


def search(backend, data: TaskData, library: dict[str, Template], seed_spec: PromptSpec, cfg: LoopConfig,
           progress: bool = True) -> LoopResult:
    rng = random.Random(cfg.seed)
    task = data.task
    examples = examples_from(data.split("train"), cfg.max_shots)
    dev = data.split("dev")
    minibatch = random.Random(cfg.seed).sample(dev, min(cfg.minibatch, len(dev)))
    ctx = {"phrases": list(library["instructions"].phrases), "max_shots": cfg.max_shots,
           "formats": [t.name for t in formats_for(library, task.name)]}
    scored: dict[tuple, Candidate] = {}

    def evaluate(spec: PromptSpec, rnd: int, source: str) -> None:
        if spec.key() not in scored:
            scored[spec.key()] = Candidate(spec, score(backend, task, spec, library, minibatch, examples).score, rnd, source)

    evaluate(seed_spec, 0, "seed")
    best, stale, rounds_run = scored[seed_spec.key()].score, 0, 0
    trajectory = [{"round": 0, "best_dev": best, "round_best_dev": best, "candidates": 1}]
    for rnd in tqdm(range(1, cfg.rounds + 1), desc="prompt search", disable=not progress):
        rounds_run = rnd
        history = sorted(scored.values(), key=lambda c: c.score, reverse=True)
        parents = [c.spec for c in history[:3]]
        before = len(scored)
        for text in propose_instructions(backend, library["meta_opro"], task.description, history,
                                         cfg.model_proposals, cfg.temperature, cfg.seed + rnd,
                                         library.get("meta_opro_chat")):
            evaluate(replace(parents[0], instruction=text), rnd, "model")
        for _ in range(cfg.mutations):
            # One or two operators per child: single steps alone can stall on a plateau of equal scores.
            ops = rng.sample(sorted(MUTATIONS), rng.choice([1, 2]))
            spec = rng.choice(parents)
            for op in ops:
                spec = MUTATIONS[op](spec, rng, ctx)
            evaluate(spec, rnd, "+".join(ops))
        new = [c for c in scored.values() if c.round == rnd]
        round_best = max((c.score for c in new), default=0.0)
        trajectory.append({"round": rnd, "best_dev": max(best, round_best), "round_best_dev": round_best,
                           "candidates": len(scored) - before})
        stale = 0 if round_best > best else stale + 1
        best = max(best, round_best)
        if stale >= cfg.patience:
            break
    # Minibatch scores are noisy: the finalists (plus the seed, the bar to beat) go to the full dev split.
    finalists = sorted(scored.values(), key=lambda c: c.score, reverse=True)[:cfg.finalists]
    full = {c.spec.key(): score(backend, task, c.spec, library, dev, examples).score
            for c in finalists + [scored[seed_spec.key()]]}
    winner = max(finalists + [scored[seed_spec.key()]], key=lambda c: full[c.spec.key()])
    return LoopResult(seed=seed_spec, best=winner.spec, seed_dev=full[seed_spec.key()], best_dev=full[winner.spec.key()],
                      rounds=rounds_run, candidates_scored=len(scored), history=list(scored.values()),
                      trajectory=trajectory)
