"""`lmops stage long_context`: build the suite, prepare every method (RoPE-scaled models, their
fine-tuned copies, the LanceDB indexes), score them all on the same items, and write
metrics/long_context.json, the plots and the markdown report."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from lmops.io import write_csv, write_json, write_text
from lmops.layout import (
    BASE_MODEL,
    CORPUS,
    LONGCTX_INDEX,
    LONGCTX_METRICS,
    LONGCTX_PASSKEY_CSV,
    LONGCTX_PLOTS,
    LONGCTX_PPL_CSV,
    LONGCTX_REPORT,
)
from lmops.params import LongContextParams, Params, ParamsError

log = logging.getLogger(__name__)


def chunk_config(lp: LongContextParams, trained: int):
    from lmops.longctx.chunking import ChunkConfig, ChunkingError

    try:
        return ChunkConfig(lp.retrieval.chunk_tokens, lp.retrieval.overlap, trained - lp.max_new_tokens - 24)
    except ChunkingError as err:  # 24: room for the question
        raise ParamsError(f"params.yaml long_context.retrieval: {err}") from None


def open_or_create(path: Path, name: str):
    """Open the named table, or create it when the database does not list it. A listed table that
    cannot be read raises: it is never replaced by a new empty one."""
    import lancedb

    from lmops.longctx.retrieval import ChunkIndex

    if path.is_dir() and name in lancedb.connect(str(path)).list_tables().tables:
        return ChunkIndex.open(path, name)
    log.info("creating LanceDB table %s in %s", name, path)
    return ChunkIndex.create(path, name)


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def rope_models(model, tokenizer, corpus, lp: LongContextParams, trained: int) -> tuple[dict, list[str]]:
    """{method: model} for each RoPE type, and its fine-tuned copy when finetune.steps > 0."""
    from lmops.longctx.finetune import pi_finetune
    from lmops.longctx.rope import RopeConfig, scaled_copy

    models, notes = {}, []
    length = int(lp.finetune.length_multiple * trained)
    for t in lp.rope.types:
        cfg = RopeConfig(t, lp.rope.factor, trained)
        models[f"rope_{t}"] = scaled_copy(model, cfg)
        if lp.finetune.steps:
            ft = scaled_copy(model, cfg)
            res = pi_finetune(ft, tokenizer, corpus, length=length, steps=lp.finetune.steps,
                              batch_size=lp.finetune.batch_size, lr=lp.finetune.lr, seed=lp.seed, threads=lp.threads)
            models[f"rope_{t}_ft"] = ft
            notes.append(f"`rope_{t}_ft`: {lp.finetune.steps} steps x {lp.finetune.batch_size} rows of {length} tokens "
                         f"(loss {res.losses[0][1]:.3f} -> {res.losses[-1][1]:.3f}, {res.seconds:.0f} s)")
    return models, notes


def build_suite(lp: LongContextParams, tok, corpus, trained: int, root: Path) -> dict:
    """The seeded items and the two LanceDB tables (grown incrementally: only new documents are embedded)."""
    from lmops.longctx.suite import fresh_kb, kb_suite, passkey_suite

    chunks = chunk_config(lp, trained)
    lengths = [m * trained for m in lp.lengths]
    passkey = passkey_suite(tok, lp.seed, lengths, lp.depths, lp.passkey_items, lp.max_new_tokens)
    ents, kb_docs = fresh_kb(lp.seed, lp.kb_entities, {e["name"] for e in corpus.entities})
    kb = kb_suite(tok, lp.seed, ents, kb_docs, lp.kb_questions, lp.kb_multiple * trained, lp.max_new_tokens)
    tag = f"s{lp.seed}_c{chunks.size}_{chunks.overlap}"
    kb_index = open_or_create(root / LONGCTX_INDEX, f"kb_{tag}")
    kb_index.add_documents(kb_docs, tok, chunks, progress=True)
    pk_index = open_or_create(root / LONGCTX_INDEX, f"passkey_{tag}")
    for it in passkey:  # each haystack is its own group, so a search never sees another item's needle
        it.id = f"{it.id}-{_digest(it.context)}"
    pk_index.add_documents([{"id": it.id, "text": it.context, "group": it.id} for it in passkey], tok, chunks,
                           progress=True)
    return {"passkey": passkey, "kb": kb, "entities": ents, "kb_index": kb_index, "pk_index": pk_index,
            "chunks": chunks, "lengths": lengths}


def run(p: Params, root: Path) -> dict:
    import torch

    from lmops.data import Corpus
    from lmops.longctx import evaluate as ev
    from lmops.longctx import report
    from lmops.longctx.methods import Runner, methods_for
    from lmops.longctx.nbce import NBCEConfig
    from lmops.model.build import load_model
    from lmops.model.evaluate import token_stream

    lp = p.long_context
    torch.set_num_threads(lp.threads)
    model, tok = load_model(root / BASE_MODEL)
    trained = int(model.config.max_position_embeddings)
    chunk_config(lp, trained)  # bad chunk params fail before any work
    corpus = Corpus.load(root / CORPUS)
    suite = build_suite(lp, tok, corpus, trained, root)
    passkey, kb, ents, kb_index = suite["passkey"], suite["kb"], suite["entities"], suite["kb_index"]
    chunks, lengths = suite["chunks"], suite["lengths"]

    scaled, notes = rope_models(model, tok, corpus, lp, trained)
    nb = NBCEConfig(lp.nbce.beta, lp.max_new_tokens, lp.nbce.sample, lp.nbce.temperature, lp.seed)
    runner = Runner(model, tok, trained, lp.max_new_tokens, nb, lp.nbce.overlap, lp.nbce.chunk_tokens, suite["pk_index"],
                    group_by_item=True, top_k=lp.retrieval.top_k, mode=lp.retrieval.mode, scaled=scaled)
    methods = methods_for(runner)
    pk_hits, pk_ms = ev.score_methods(runner, passkey, methods)
    runner.index, runner.group_by_item = kb_index, False
    kb_hits, kb_ms = ev.score_methods(runner, kb, methods)

    grids = ev.passkey_grid(passkey, pk_hits)
    metrics = {"trained_context": trained,
               "passkey": {m: {str(L): acc for L, acc in ev.by_length(g).items()} for m, g in grids.items()},
               "kb_qa": {m: round(sum(h) / len(h), 4) for m, h in kb_hits.items()},
               "retrieval": ev.retrieval_metrics(kb_index, kb, lp.retrieval.mode)}

    val_texts = [d["text"] for d in corpus.split(corpus.documents, "val")]
    seq_len = max(lengths)
    stream = token_stream(tok, val_texts, seq_len * lp.ppl_sequences)
    seqs = [stream[i:i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]
    ppl_models = {"truncation": (model, trained), "no_scaling": (model, None), **{k: (m, None) for k, m in scaled.items()}}
    ppl = {k: ev.ppl_by_position([ev.token_nll(m, s, w) for s in seqs], trained) for k, (m, w) in ppl_models.items()}

    write_json(root / LONGCTX_METRICS, metrics)
    write_csv(root / LONGCTX_PASSKEY_CSV, ["method", "length", "depth", "accuracy"],
                     [[m, L, d, round(a, 4)] for m, g in grids.items() for (L, d), a in g.items()])
    write_csv(root / LONGCTX_PPL_CSV, ["method", "position", "perplexity"],
                     [[m, (i + 1) * trained, v] for m, vals in ppl.items() for i, v in enumerate(vals)])
    report.heatmaps(grids, root / LONGCTX_PLOTS / "passkey_heatmaps.png", trained)
    report.ppl_plot(ppl, trained, root / LONGCTX_PLOTS / "ppl_by_position.png")
    notes += [f"passkey: {len(passkey)} items ({lp.passkey_items} per length x depth cell); KB-QA: {len(kb)} "
              f"questions on {len(ents)} fresh entities, {lp.kb_multiple * trained}-token contexts for full-context "
              f"methods; retrieval: top-{lp.retrieval.top_k} {lp.retrieval.mode} over {chunks.size}-token chunks "
              f"(overlap {chunks.overlap}); NBCE beta {lp.nbce.beta}"]
    write_text(root / LONGCTX_REPORT, report.markdown(metrics, {"passkey": pk_ms, "kb_qa": kb_ms}, ppl, trained, notes))
    return metrics
