"""Both prompt optimizers end to end on one backend: the self-refining loop (search on train/dev, one
test report, registry update) and the route-then-refine router, plus their report and plot. The
`prompts` stage (`lmops.stages.prompts`) wires them to params and files."""
from __future__ import annotations

import random
from pathlib import Path

from lmops.io import InputError, pyplot, save_figure, write_csv
from lmops.params import PromptsParams


def run_loop(pp: PromptsParams, backend, corpus, library, registry, progress: bool = True) -> dict:
    """Pattern 2 end to end: search on train/dev, one test report, registry update."""
    from lmops.prompts.harness import TASKS, PromptSpec, TaskData, examples_from, score
    from lmops.prompts.loop import LoopConfig, search

    lp = pp.loop
    task = TASKS[lp.task]
    data = TaskData(task, corpus, {"train": max(1, lp.max_shots), "dev": lp.dev_size, "test": lp.test_size}, pp.seed)
    cfg = LoopConfig(**lp.model_dump(include=set(LoopConfig.__dataclass_fields__) - {"seed"}), seed=pp.seed)
    seed_spec = PromptSpec(**lp.seed_prompt.model_dump())
    result = search(backend, data, library, seed_spec, cfg, progress=progress)
    search_reads = sorted(set(data.reads))  # proof for the benchmark: selection saw no test item
    # The one and only read of the test split: after selection, for the report.
    examples, test = examples_from(data.split("train"), cfg.max_shots), data.split("test")
    seed_test = score(backend, task, seed_spec, library, test, examples, with_loglik=True)
    best_test = score(backend, task, result.best, library, test, examples, with_loglik=True)
    promoted = register(registry, task, result, seed_spec, best_test, backend, library, data, examples)
    return {"result": result, "seed_test": seed_test, "best_test": best_test, "promoted": promoted,
            "search_reads": search_reads}


# What `lmops serve` renders by default (`serve.prompt_ref: kb_qa@production`): the format the base
# model was trained on, so a fresh registry serves exactly what evaluation measured.
SERVED_PROMPT = ("kb_qa", {"format": "kb_qa_trained", "instruction": "", "shots": 0, "question_first": False})


def ensure_served_prompt(registry, library) -> int | None:
    """Give the served task a `production` prompt (its training format) if it has none; the version."""
    name, spec = SERVED_PROMPT
    entry = registry.data["prompts"].get(name)
    if entry and "production" in entry["aliases"]:
        return None
    version = registry.register(name, spec, library[spec["format"]].body, {}, "seed")
    registry.set_alias(name, "production", version)
    return version


def register(registry, task, result, seed_spec, best_test, backend, library, data, examples) -> bool:
    """The winner becomes `candidate`; it becomes `production` only if it beats production on dev."""
    from lmops.prompts.harness import PromptSpec, score

    lib = library
    name = task.name
    if name not in registry.data["prompts"] or "production" not in registry.data["prompts"][name]["aliases"]:
        v = registry.register(name, seed_spec.to_dict(), lib[seed_spec.format].body, {"dev": result.seed_dev}, "seed")
        registry.set_alias(name, "production", v)
    prod = registry.get(f"{name}@production")
    prod_spec = PromptSpec(**prod["spec"])
    prod_dev = result.seed_dev if prod_spec == seed_spec else score(backend, task, prod_spec, lib, data.split("dev"), examples).score
    registry.register(name, prod_spec.to_dict(), lib[prod_spec.format].body, {"dev": prod_dev}, prod["source"])
    v = registry.register(name, result.best.to_dict(), lib[result.best.format].body,
                          {"dev": result.best_dev, "test": best_test.score, "test_loglik": best_test.loglik}, "loop")
    registry.set_alias(name, "candidate", v)
    promoted = result.best_dev > prod_dev
    if promoted:
        registry.set_alias(name, "production", v)
    registry.save()
    return promoted


def run_router(pp: PromptsParams, model, tokenizer, backend, corpus, library, progress: bool = True) -> dict:
    """Pattern 1 end to end: label raw prompts, train classifier and refiner, route, report on test."""
    from lmops.embed import load_embedder
    from lmops.prompts.backends import HFBackend
    from lmops.prompts.harness import TASKS, Item, PromptSpec, TaskData, as_asked, render
    from lmops.prompts.raw import EFFECTIVE_VARS, raw_prompts
    from lmops.prompts.router import (
        QualityClassifier,
        RefinerConfig,
        embed,
        pick_threshold,
        refine,
        roc_auc,
        routed,
        train_refiner,
    )

    rp, task = pp.router, TASKS[pp.router.task]
    if library[rp.format].task != task.name:
        raise InputError(f"prompts.router.format {rp.format!r} ({library[rp.format].path}) is not a {task.name} template")
    data = TaskData(task, corpus, {"train": rp.train_size, "dev": rp.dev_size, "test": rp.test_size}, pp.seed + 1)
    raws = {s: raw_prompts(data.split(s), pp.seed + i, task.name) for i, s in enumerate(("train", "dev", "test"))}
    train_items = data.split("train")
    pair_rng = random.Random(pp.seed + 7)
    pairs = [(r.request, r.target) for r in raw_prompts([pair_rng.choice(train_items) for _ in range(rp.refiner_pairs)],
                                                        pp.seed + 11, task.name)]

    def correct(prompts, rs, variables):  # each path's lead comes from its own question text
        asked = as_asked(backend, task, prompts, variables)
        return [task.correct(p, r.answer) for p, r in zip(backend.generate(asked, task.max_new_tokens), rs)]

    direct = {s: correct([library["raw_direct"].render(context=r.context, request=r.request) for r in rs], rs,
                         [EFFECTIVE_VARS[task.name](r, r.request) for r in rs]) for s, rs in raws.items()}
    encoder = load_embedder()
    clf = QualityClassifier().fit(embed(raws["train"], encoder), direct["train"])
    p_ok = {s: clf.predict(embed(raws[s], encoder)) for s in ("dev", "test")}
    cfg = RefinerConfig(rank=rp.refiner_rank, alpha=2 * rp.refiner_rank, steps=rp.refiner_steps, lr=rp.refiner_lr,
                        max_new_tokens=rp.refiner_max_new_tokens, seed=pp.seed)
    refiner = HFBackend(train_refiner(model, tokenizer, library["refiner"], pairs, cfg, progress), tokenizer)
    spec, refined = PromptSpec(format=rp.format), {}
    for s in ("dev", "test"):
        texts = refine(refiner, library["refiner"], raws[s], cfg.max_new_tokens)
        items = [Item(EFFECTIVE_VARS[task.name](r, text), r.answer) for r, text in zip(raws[s], texts)]
        refined[s] = correct(render(spec, library, items, []), raws[s], [it.vars for it in items])
    threshold = pick_threshold(direct["dev"], refined["dev"], p_ok["dev"])  # dev only
    routed_test, share = routed(direct["test"], refined["test"], p_ok["test"], threshold)
    styles = sorted({r.style for r in raws["test"]})
    by_style = {st: {k: round(sum(v for v, r in zip(vals, raws["test"]) if r.style == st) /
                             max(1, sum(r.style == st for r in raws["test"])), 3)
                     for k, vals in (("direct", direct["test"]), ("refined", refined["test"]))} for st in styles}
    return {"direct_test": round(sum(direct["test"]) / len(direct["test"]), 4),
            "always_refine_test": round(sum(refined["test"]) / len(refined["test"]), 4),
            "routed_test": round(routed_test, 4), "classifier_auc": roc_auc(direct["test"], p_ok["test"]),
            "routed_share": round(share, 4), "threshold": round(threshold, 4), "by_style": by_style,
            "train_positive_share": round(sum(direct["train"]) / len(direct["train"]), 4)}


def write_trajectory(rows: list[dict], path: Path) -> None:
    """Dev score per round as CSV (a DVC plot) and PNG (for people and the Prefect artifact)."""
    fields = ["round", "best_dev", "round_best_dev", "candidates"]
    write_csv(path, fields, [[r[f] for f in fields] for r in rows])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["round"] for r in rows], [r["best_dev"] for r in rows], marker="o", label="best so far")
    ax.plot([r["round"] for r in rows], [r["round_best_dev"] for r in rows], marker="x", ls="--", label="round best")
    ax.set(xlabel="round", ylabel="dev minibatch score", title="Self-refining prompt loop", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path.with_suffix(".png"))


def markdown_report(pp: PromptsParams, loop: dict, router: dict, registry) -> str:
    res = loop["result"]
    top = sorted(res.history, key=lambda c: c.score, reverse=True)[:8]
    cands = "\n".join(f"| {c.round} | {c.source} | `{c.spec.format}` | {c.spec.instruction[:50]!r} | {c.spec.shots} | "
                      f"{c.spec.question_first} | {c.score:.3f} |" for c in top)
    styles = "\n".join(f"| {st} | {v['direct']:.3f} | {v['refined']:.3f} |" for st, v in router["by_style"].items())
    reg = "\n".join(f"| {r['name']} | {r['version']} | {r['aliases']} | {r['source']} | {r['dev']} | {r['test']} |"
                    for r in registry.rows())
    return f"""# Prompt optimization ({pp.loop.task}, backend `{pp.backend.type}`)

## Self-refining loop
| | dev | test (reported once) | test answer log-lik |
|---|---|---|---|
| seed prompt | {res.seed_dev:.3f} | {loop['seed_test'].score:.3f} | {loop['seed_test'].loglik} |
| best prompt | {res.best_dev:.3f} | {loop['best_test'].score:.3f} | {loop['best_test'].loglik} |

{res.rounds} rounds, {res.candidates_scored} candidates scored; promoted to production: **{loop['promoted']}**.
Best spec: `{res.best.to_dict()}`

Top candidates (dev minibatch):

| round | source | format | instruction | shots | question first | dev |
|---|---|---|---|---|---|---|
{cands}

## Route, then refine ({pp.router.task}, held-out raw prompts)
| set-up | test accuracy |
|---|---|
| direct | {router['direct_test']:.3f} |
| always refine | {router['always_refine_test']:.3f} |
| routed | {router['routed_test']:.3f} |

Classifier ROC-AUC {router['classifier_auc']}, routed share {router['routed_share']:.3f} (threshold {router['threshold']} picked on dev).

| raw style | direct | refined |
|---|---|---|
{styles}

## Prompt registry
| name | version | aliases | source | dev | test |
|---|---|---|---|---|---|
{reg}
"""
