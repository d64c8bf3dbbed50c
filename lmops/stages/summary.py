"""`lmops stage summary`: the headline figures of the run in metrics/summary.json, the one file
`dvc metrics show` and `dvc exp show` compare by default, and every timing in metrics/timings.json
(a plain output, so run-to-run speed noise stays out of the comparison). The stages' own files
(metrics/base.json, prompts.json, quantization.json, long_context.json) keep every detail and are
opened on purpose: `dvc metrics show metrics/quantization.json`."""
from __future__ import annotations

import re
from pathlib import Path

from lmops.io import read_json, write_json
from lmops.layout import BASE_METRICS, LONGCTX_METRICS, PROMPTS_METRICS, QUANT_METRICS, SUMMARY_METRICS, TIMINGS
from lmops.params import Params

SOURCES = {"base": BASE_METRICS, "prompts": PROMPTS_METRICS, "quantization": QUANT_METRICS,
           "long_context": LONGCTX_METRICS}
TIMING = re.compile(r"(seconds|_s|_ms|per_s)$")  # train_seconds, tokens_per_s, p50_ms, ...


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flat(v, key) if isinstance(v, dict) else {key: v})
    return out


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def headline(m: dict[str, dict], tolerance: float = 0.01) -> dict:
    out: dict[str, dict] = {}
    if (b := m.get("base")):
        out["base"] = {k: b[k] for k in ("val_perplexity", "recall_exact_match", "kb_qa_exact_match") if k in b}
    if (p := m.get("prompts")):
        out["prompts"] = {"loop_best_test": p.get("loop", {}).get("best_test"),
                          "router_routed_test": p.get("router", {}).get("routed_test")}
    if (q := m.get("quantization")) and q.get("schemes"):
        schemes, base = q["schemes"], q["schemes"].get(q.get("baseline"), {})
        ok = {n: s for n, s in schemes.items() if base and s["perplexity"] <= (1 + tolerance) * base["perplexity"]}
        smallest = min(ok or schemes, key=lambda n: schemes[n]["total_bytes"])
        out["quantization"] = {"baseline_perplexity": base.get("perplexity"),
                               "smallest_within_tolerance": smallest,
                               "smallest_within_tolerance_kib": round(schemes[smallest]["total_bytes"] / 1024, 1),
                               "smallest_within_tolerance_perplexity": schemes[smallest]["perplexity"]}
    if (lc := m.get("long_context")) and lc.get("passkey"):
        longest = max(int(n) for acc in lc["passkey"].values() for n in acc)
        best = max(lc["passkey"], key=lambda k: (lc["passkey"][k].get(str(longest), 0), _mean(lc["passkey"][k].values())))
        out["long_context"] = {"longest_context": longest, "best_method": best,
                               "best_passkey_at_longest": lc["passkey"][best].get(str(longest)),
                               "best_kb_qa": max(lc.get("kb_qa", {}).values(), default=None),
                               "retrieval_recall@5": lc.get("retrieval", {}).get("recall@5")}
    return out


def timings(m: dict[str, dict]) -> dict:
    return {name: {k: v for k, v in _flat(d).items() if TIMING.search(k)} for name, d in m.items()}


def run(p: Params, root: Path) -> dict:
    m = {name: read_json(root / path) for name, path in SOURCES.items() if (root / path).exists()}
    summary = headline(m, p.summary.quant_tolerance)
    write_json(root / SUMMARY_METRICS, summary)
    write_json(root / TIMINGS, timings(m))
    return summary
