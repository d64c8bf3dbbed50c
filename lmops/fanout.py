"""The fan-out of the two grids: one cell per quantization scheme or per long-context method, each run
on its own (in its own clone, by its own worker: flows/fanout.py), then merged into one table and one
frontier. Core code only: no Prefect here. A cell writes its outputs under models/grid/<kind>/<item>/
(the variant or method outputs plus metrics.json), which the flow `dvc add`s and pushes.

Throughput columns (quantization tokens/s) are measured inside each cell: with several cells on one
machine at once they share its cores, so compare them only across cells run alike."""
from __future__ import annotations

import shutil
from pathlib import Path

from lmops.errors import LmopsError
from lmops.io import read_json, write_json, write_text
from lmops.layout import BASE_MODEL, CORPUS, GRID_DIR, GRID_PNG, GRID_REPORT, LONGCTX_INDEX, QUANT_DIR
from lmops.params import Params

KINDS = ("quantize", "long_context")


class FanoutError(LmopsError, ValueError):
    """An unknown kind or item, or a merge missing a cell."""


def items(kind: str, p: Params) -> list[str]:
    """The cells of a grid: the params' schemes, or the long-context methods the params switch on."""
    if kind == "quantize":
        return list(p.quantize.schemes)
    if kind == "long_context":
        from lmops.longctx.methods.registry import build_methods

        return list(build_methods(p.long_context))
    raise FanoutError(f"unknown grid {kind!r}: one of {', '.join(KINDS)}")


def cell_dir(kind: str, item: str) -> Path:
    return GRID_DIR / kind / item


def run_cell(kind: str, item: str, p: Params, root: Path) -> dict:
    """Run one cell in project `root`; returns its metrics (also in <cell_dir>/metrics.json)."""
    if item not in items(kind, p):
        raise FanoutError(f"{item!r} is not a cell of the {kind} grid ({', '.join(items(kind, p))})")
    out = root / cell_dir(kind, item)
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind == "quantize":
        from lmops.stages.quantize import run_grid

        one = p.model_copy(update={"quantize": p.quantize.model_copy(update={"schemes": [item]})})
        res = run_grid(one, root, progress=False)
        shutil.move(str(root / QUANT_DIR / item), out)  # the variant (this clone's models/quantized has it only)
        metrics = {"baseline": res["baseline"], "context_tokens": res["context_tokens"],
                   "schemes": {item: res["schemes"][item]}}
    else:
        from lmops.longctx.experiment import compare
        from lmops.longctx.methods.registry import build_methods

        lp = p.long_context
        res = compare(lp, root / BASE_MODEL, root / CORPUS, root / LONGCTX_INDEX, {item: build_methods(lp)[item]})
        out.mkdir()
        metrics = res.metrics
    write_json(out / "metrics.json", metrics)
    return metrics


def merge(kind: str, cells: dict[str, dict], root: Path) -> str:
    """One table (and, for quantization, one frontier plot) from every cell's metrics; returns the table."""
    if not cells:
        raise FanoutError(f"no {kind} cells to merge")
    report = root / str(GRID_REPORT).format(kind=kind)
    if kind == "quantize":
        from lmops.quant.report import frontier_plot, markdown_table

        first = next(iter(cells.values()))
        metrics = {"baseline": first["baseline"], "context_tokens": first["context_tokens"],
                   "schemes": {k: m["schemes"][k] for k, m in cells.items()}}
        if metrics["baseline"] not in metrics["schemes"]:
            raise FanoutError(f"the quantization baseline {metrics['baseline']!r} is not among the cells {sorted(cells)}")
        table = markdown_table(metrics)
        frontier_plot(metrics, root / str(GRID_PNG).format(kind=kind))
    else:
        rows = ["| method | KB-QA EM | " + " | ".join(f"passkey @{L}" for L in next(iter(cells.values()))["passkey"][
            next(iter(cells))]) + " |"]
        rows.append("|---|" + "---:|" * (len(rows[0].split("|")) - 3))
        metrics = {"methods": {}}
        for name, m in cells.items():
            metrics["methods"][name] = {"kb_qa": m["kb_qa"][name], "passkey": m["passkey"][name]}
            rows.append(f"| `{name}` | {m['kb_qa'][name]:.1%} | " + " | ".join(
                f"{a:.0%}" for a in m["passkey"][name].values()) + " |")
        table = "# Long-context methods (fan-out)\n\n" + "\n".join(rows) + "\n"
    write_text(report, table)
    write_json(report.with_suffix(".json"), metrics)
    return table


def load_cell(kind: str, item: str, root: Path) -> dict:
    return read_json(root / cell_dir(kind, item) / "metrics.json")
