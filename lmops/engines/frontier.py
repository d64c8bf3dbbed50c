"""Other engines' builds on lmops' frontier: build lmops' own variants and the engines' exports of the
same model, then measure all of them in one interleaved run, by one protocol.

- perplexity: the quantize stage's protocol (`lmops.quant.kv.window_perplexity`: non-overlapping
  `max_length` windows of the same held-out tokens), from the engine's logits where it exposes them;
- decode tokens/s: greedy batch-1, `decode_tokens` new tokens after a `prompt_tokens` prompt, prefill
  included (the stage's `decode_speeds` protocol), best of `repeats` round-robin rounds;
- served tokens/s (benchmarks/engines.py): the same prompt through `lmops.serve.engine.generate`, the
  function `lmops serve` runs per batch (`lmops.engines.served`; not measured by the quantize stage);
- prefill tokens/s: one forward pass over `prefill_tokens` tokens (logits at every position);
- bytes: the weights on disk (lmops: `saved_weight_bytes`; an export: its engine files).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from lmops.engines.base import EngineNotInstalled

log = logging.getLogger("lmops.engines")
# lmops' weight-only schemes (a KV-cache scheme decodes through its cache, timed by the stage itself)
LMOPS_BITS = {"fp32": 32, "bf16": 16, "w8": 8, "w4_rtn": 4, "w4_gptq": 4, "w4_gptq_iz": 4, "qat_w4": 4}


@dataclass
class Row:
    name: str  # "lmops:w8", "ctranslate2:int8", ...
    engine: str  # "lmops" or the engine's name
    bits: int
    path: Path
    bytes: int = 0
    perplexity: float | None = None
    prefill_tokens_per_s: float = 0.0
    decode_tokens_per_s: float = 0.0
    served_tokens_per_s: float = 0.0
    served_tokens: int = 0
    handle: object = field(default=None, repr=False)  # model (lmops) or runner (engine)
    tokenizer: object = field(default=None, repr=False)

    def metrics(self) -> dict:
        return {"engine": self.engine, "bits": self.bits, "weight_bytes": self.bytes, "perplexity": self.perplexity,
                "prefill_tokens_per_s": round(self.prefill_tokens_per_s, 2),
                "decode_tokens_per_s": round(self.decode_tokens_per_s, 2),
                "served_tokens_per_s": round(self.served_tokens_per_s, 2), "served_tokens": self.served_tokens}


def bits_label(bits: int) -> str:
    return {32: "fp32", 16: "bf16"}.get(bits, f"int{bits}")


def heldout_ids(tokenizer, source: str, root: Path, tokens: int) -> list[int]:
    """`corpus` = the quantize stage's held-out tokens (the corpus' test split); `text:PATH` = a text
    file's paragraphs (e.g. data/english/heldout.txt for a released model)."""
    from lmops.io import InputError
    from lmops.model.evaluate import token_stream

    if source == "corpus":
        from lmops.data import Corpus
        from lmops.layout import CORPUS

        corpus = Corpus.load(root / CORPUS)
        texts = [d["text"] for d in corpus.split(corpus.documents, "test")]
    else:
        path = Path(source.removeprefix("text:"))
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise InputError(f"held-out text {path} is not a file")
        texts = [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    ids = token_stream(tokenizer, texts, tokens)
    if len(ids) < 64:
        raise InputError(f"held-out source {source!r} gives only {len(ids)} tokens")
    return ids


def variant_rows(variants: Path, schemes: list[str]) -> list[Row]:
    """lmops' variants already saved under `variants` (e.g. the quantize stage's models/quantized)."""
    from lmops.errors import EngineError
    from lmops.quant.artifact import saved_weight_bytes

    missing = [s for s in schemes if not (variants / s / "quant.json").is_file()]
    if missing:
        raise EngineError(f"{variants} holds no saved variant {', '.join(missing)} (run the quantize stage with it)")
    return [Row(f"lmops:{s}", "lmops", LMOPS_BITS.get(s, 16), variants / s, saved_weight_bytes(variants / s))
            for s in schemes]


def build_lmops(base: Path, schemes: list[str], work: Path, qp=None) -> list[Row]:
    """lmops' own variants, built, saved and reloaded as the quantize stage does (weight-only schemes)."""
    from lmops.params import QuantizeParams
    from lmops.quant.artifact import save_variant, saved_weight_bytes, variant_meta
    from lmops.quant.build import BuildContext, build_variant
    from lmops.quant.schemes import build_scheme

    qp = qp or QuantizeParams.model_construct()
    import torchao.quantization  # noqa: F401 - its tensor types load with weights_only=True once imported
    rows = []
    for name in schemes:
        out = work / "lmops" / name
        if not (out / "quant.json").is_file():
            from lmops.io import atomic_dir

            scheme = build_scheme(name, qp)
            model, tok, fmt = build_variant(scheme, BuildContext(base=base))
            with atomic_dir(out) as tmp:
                save_variant(model, tok, tmp, variant_meta(scheme, fmt))
            del model
        rows.append(Row(f"lmops:{name}", "lmops", LMOPS_BITS.get(name, 16), out, saved_weight_bytes(out)))
    return rows


def split_build(spec: str, variants: Path | None) -> tuple[str, Path | None]:
    """"engine:bits@SCHEME" -> ("engine:bits", variants / SCHEME): the export of lmops' own saved variant
    (`lmops.quant.export`) rather than of the float base; "engine:bits" -> (spec, None)."""
    from lmops.errors import EngineError

    build, _, scheme = spec.partition("@")
    if not scheme:
        return build, None
    if variants is None or not (variants / scheme / "quant.json").is_file():
        raise EngineError(f"engine build {spec!r} exports lmops' variant {scheme!r}, which was not built "
                          f"(no {variants / scheme if variants else scheme}/quant.json): add it to the schemes")
    return build, variants / scheme


def build_engines(base: Path, builds: list[str], work: Path, group_size: int, variants: Path | None = None
                  ) -> tuple[list[Row], list[str]]:
    """The engines' exports ("engine:bits" each, validated first) of `base`, or, for "engine:bits@SCHEME",
    of lmops' saved variant `variants/SCHEME`; and one line per build that was skipped (engine not
    installed: how to install it). Exports are cached in `work`."""
    from lmops.engines.base import export, export_bytes, read_marker
    from lmops.engines.registry import engine_named, parse_build

    parsed = [(b, *split_build(b, variants)) for b in builds]  # before any work: unknown engines, bits, variants
    parsed = [(b, *parse_build(build), src or base) for b, build, src in parsed]
    rows, skipped = [], []
    for spec, name, bits, src in parsed:
        try:
            engine_named(name).require()
        except EngineNotInstalled as err:
            skipped.append(f"skipped {spec}: {err}")
            log.warning("skipped %s: %s", spec, err)
            continue
        out = work / (f"{name}_{bits_label(bits)}" + ("" if src == base else f"_{src.name}"))
        fresh = (out / "engine.json").is_file() and read_marker(out).get("source") == str(src) \
            and read_marker(out).get("group_size") == group_size
        if not fresh:
            start = time.perf_counter()
            export(name, src, out, bits, group_size)
            log.info("exported %s in %.1f s", spec, time.perf_counter() - start)
        rows.append(Row(spec if src != base else f"{name}:{bits_label(bits)}", name, bits, out, export_bytes(out)))
    return rows, skipped


def _open(row: Row, threads: int) -> None:
    if row.engine == "lmops":
        from lmops.quant.artifact import load_variant

        row.handle, row.tokenizer, _ = load_variant(row.path)
    else:
        from transformers import AutoTokenizer

        from lmops.engines.base import open_export

        row.handle, _ = open_export(row.path, threads)
        row.tokenizer = AutoTokenizer.from_pretrained(row.path)


def _decode(row: Row, prompt: list[int], tokens: int) -> float:
    if row.engine == "lmops":
        import torch

        model = row.handle
        with torch.no_grad():
            start = time.perf_counter()
            model.generate(torch.tensor([prompt]), max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                           pad_token_id=model.config.eos_token_id)
            return tokens / (time.perf_counter() - start)
    runner = row.handle
    start = time.perf_counter()
    n = sum(1 for _ in runner.stream(prompt, tokens, 0.0, min_new=tokens, logprobs=False))
    return n / (time.perf_counter() - start)


def _prefill(row: Row, ids: list[int]) -> float:
    start = time.perf_counter()
    if row.engine == "lmops":
        import torch

        with torch.no_grad():
            row.handle(torch.tensor([ids]))
    else:
        row.handle.prefill(ids)
    return len(ids) / (time.perf_counter() - start)


def measure(rows: list[Row], ids: list[int], *, max_length: int, prompt_tokens: int, decode_tokens: int,
            prefill_tokens: int, repeats: int, threads: int, progress: bool = True, served=None) -> None:
    """Fill every row's figures in one interleaved run (round-robin rounds, best round kept).
    `served(row, prompt text, tokens)` -> (tokens/s, tokens): the serving path's rate
    (`lmops.engines.served.served_rate`); None = not measured (the quantize stage)."""
    import torch
    from tqdm.auto import tqdm

    from lmops.engines.base import perplexity
    from lmops.quant.kv import window_perplexity

    torch.set_num_threads(threads)
    for row in rows:
        _open(row, threads)
    for row in tqdm(rows, desc="perplexity", disable=not progress):
        if row.engine == "lmops":
            row.perplexity = round(window_perplexity(row.handle, ids, max_length, None, max_length), 4)
        else:
            row.perplexity = round(perplexity(row.handle, ids, max_length), 4)
    prompt, long = ids[:prompt_tokens], ids[:prefill_tokens]
    prompt_text = rows[0].tokenizer.decode(prompt)
    for row in rows:  # warm-up
        _decode(row, prompt, 4)
        _prefill(row, long[:32])
    for _ in tqdm(range(repeats), desc="timing rounds", disable=not progress):
        for row in rows:
            row.decode_tokens_per_s = max(row.decode_tokens_per_s, _decode(row, prompt, decode_tokens))
            row.prefill_tokens_per_s = max(row.prefill_tokens_per_s, _prefill(row, long))
            if served is not None:
                tps, n = served(row, prompt_text, decode_tokens)
                if tps > row.served_tokens_per_s:
                    row.served_tokens_per_s, row.served_tokens = tps, n


def compare(rows: list[Row]) -> list[dict]:
    """Per bit width: lmops' fastest serving path against the fastest peer engine (decode tokens/s), and
    the fastest path `lmops serve` offers at that width (its own model or an export it serves)."""
    out = []
    for bits in sorted({r.bits for r in rows}, reverse=True):
        ours = [r for r in rows if r.bits == bits and r.engine == "lmops"]
        peers = [r for r in rows if r.bits == bits and r.engine != "lmops"]
        if not ours or not peers:
            continue
        # the serving path's rate where it was measured, else the raw decode rate
        rate = (lambda r: r.served_tokens_per_s) if any(r.served_tokens for r in rows) else \
            (lambda r: r.decode_tokens_per_s)
        mine = max(ours, key=rate)
        peer = max(peers, key=lambda r: r.decode_tokens_per_s)
        best_served = max(ours + peers, key=rate)
        out.append({"bits": bits, "lmops": mine.name, "lmops_served_tokens_per_s": round(rate(mine), 2),
                    "peer": peer.name, "peer_decode_tokens_per_s": round(peer.decode_tokens_per_s, 2),
                    "ratio": round(rate(mine) / peer.decode_tokens_per_s, 3),
                    "fastest_served": best_served.name,
                    "fastest_served_tokens_per_s": round(rate(best_served), 2),
                    "fastest_served_ratio": round(rate(best_served) / peer.decode_tokens_per_s, 3),
                    "rate": "served" if any(r.served_tokens for r in rows) else "decode"})
    return out


def table(rows: list[Row], baseline: str = "lmops:fp32") -> str:
    base = next((r for r in rows if r.name == baseline), rows[0])
    head = ("| build | bits | weight MB | perplexity | prefill tok/s | decode tok/s | decode vs " + base.name +
            " | served tok/s (lmops serve path) |\n|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        ppl = "n/a" if r.perplexity is None else f"{r.perplexity:.3f}"
        lines.append(f"| {r.name} | {bits_label(r.bits)} | {r.bytes / 1e6:.1f} | {ppl} | {r.prefill_tokens_per_s:.1f} | "
                     f"{r.decode_tokens_per_s:.2f} | {r.decode_tokens_per_s / max(base.decode_tokens_per_s, 1e-9):.2f}x | "
                     f"{r.served_tokens_per_s:.2f} ({r.served_tokens} tok) |")
    return "\n".join(lines)


def stage_engines(qp, base: Path, qdir: Path, data, results: dict) -> dict:
    """The quantize stage's engine rows (`quantize.engines`): each build exported into
    `<models/quantized>/engines/`, then measured with the stage's weight-only variants in one interleaved
    run, on the stage's held-out tokens, windows, decode prompt and thread count. Engines that are not
    installed are listed under "skipped" (and in plots/quantization.md)."""
    rows, skipped = build_engines(base, qp.engines, qdir / "engines", qp.methods.int4.group_size, variants=qdir)
    ours = [Row(f"lmops:{n}", "lmops", LMOPS_BITS[n], qdir / n, results[n]["weight_bytes"])
            for n in results if n in LMOPS_BITS]
    everything = ours + rows
    if rows:
        measure(everything, data.test_ids, max_length=qp.max_length, prompt_tokens=len(data.decode_prompt),
                decode_tokens=qp.decode_tokens, prefill_tokens=qp.max_length, repeats=qp.decode_repeats,
                threads=qp.threads, progress=False)
    return {"rows": {r.name: r.metrics() for r in everything} if rows else {}, "compare": compare(everything),
            "skipped": skipped, "group_size": qp.methods.int4.group_size}


def engines_markdown(engines: dict) -> str:
    """The engine frontier as markdown (appended to plots/quantization.md), skipped builds included."""
    lines = ["", "", "## Other engines' builds (one interleaved run)", ""]
    if engines["rows"]:
        lines += ["| build | engine | bits | weight bytes | perplexity | prefill tok/s | decode tok/s | served tok/s |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, m in engines["rows"].items():
            lines.append(f"| {name} | {m['engine']} | {bits_label(m['bits'])} | {m['weight_bytes']} | {m['perplexity']} | "
                         f"{m['prefill_tokens_per_s']} | {m['decode_tokens_per_s']} | {m['served_tokens_per_s']} |")
    for c in engines["compare"]:
        lines.append(f"\n{bits_label(c['bits'])}: lmops' fastest serving path {c['lmops']} {c['lmops_served_tokens_per_s']} "
                     f"tok/s vs {c['peer']} {c['peer_decode_tokens_per_s']} ({c['ratio']}x); fastest path lmops serves: "
                     f"{c['fastest_served']} ({c['fastest_served_ratio']}x)")
    lines += [f"\n{line}" for line in engines["skipped"]]
    return "\n".join(lines) + "\n"
