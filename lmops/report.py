"""Run summaries: every `metrics/*.json` as a human-readable text and markdown tables."""
from __future__ import annotations

from pathlib import Path

import yaml

from lmops.io import read_json


def pipeline_stages(root: str | Path) -> list[str]:
    """Stage names in `dvc.yaml` order (declared upstream first), the order the flow runs them."""
    return list((yaml.safe_load((Path(root) / "dvc.yaml").read_text()) or {}).get("stages", {}))


def collect_metrics(root: str | Path) -> dict[str, dict]:
    return {p.stem: read_json(p) for p in sorted((Path(root) / "metrics").glob("*.json"))}


def _flat(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif not isinstance(v, list):
            out[f"{prefix}{k}"] = v
    return out


def metric_rows(metrics: dict[str, dict]) -> list[dict]:
    """One row per scalar metric: {file, metric, value}; nested keys are dotted."""
    return [{"file": f"metrics/{name}.json", "metric": k, "value": v}
            for name, m in metrics.items() for k, v in _flat(m).items()]


def markdown_summary(metrics: dict[str, dict], ran: dict[str, bool]) -> str:
    stages = "\n".join(f"| `{s}` | {'ran' if r else 'up to date (skipped)'} |" for s, r in ran.items())
    base = metrics.get("base", {})
    headline = ""
    if base:
        headline = (f"Base model: **{base.get('params', '?'):,} parameters**, validation perplexity "
                    f"**{base.get('val_perplexity')}** (uniform {base.get('uniform_perplexity')}), in-context recall "
                    f"**{base.get('recall_exact_match', 0):.0%}**, knowledge-base QA **{base.get('kb_qa_exact_match', 0):.0%}**.\n\n")
    return f"# lmops pipeline run\n\n{headline}| stage | status |\n|---|---|\n{stages}\n"


def text_summary(metrics: dict[str, dict], ran: dict[str, bool]) -> str:
    lines = ["", "lmops pipeline summary", "=" * 22]
    lines += [f"  {s:<14} {'ran' if r else 'up to date'}" for s, r in ran.items()]
    for row in metric_rows(metrics):
        value = f"{row['value']:.4g}" if isinstance(row["value"], float) else row["value"]
        lines.append(f"  {row['file']:<28} {row['metric']:<32} {value}")
    return "\n".join(lines)
