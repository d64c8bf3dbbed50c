"""The stage's human outputs: length x depth heatmaps (PNG), the perplexity-by-position plot, the
DVC plot CSVs and the markdown table."""
from __future__ import annotations

from pathlib import Path

from lmops.io import pyplot, save_figure

DPI = 90


def heatmaps(grids: dict[str, dict[tuple[int, float], float]], path: Path, trained: int) -> None:
    """One panel per method: passkey accuracy, rows = depth, columns = length."""
    plt = pyplot()
    names = list(grids)
    cols = min(5, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        lengths = sorted({L for L, _ in grids[name]})
        depths = sorted({d for _, d in grids[name]})
        data = [[grids[name][(L, d)] for L in lengths] for d in depths]
        ax.imshow(data, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(lengths)), [f"{L // trained}x" for L in lengths])
        ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
        for i, row in enumerate(data):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:.0%}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
        ax.set_title(name, fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"Passkey accuracy: context length (x {trained} tokens) by needle depth", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=DPI)


def ppl_plot(ppl: dict[str, list[float]], bucket: int, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if not ppl:
        ax.text(0.5, 0.5, "not measured (long_context.ppl_sequences: 0)", ha="center", va="center")
    for name, values in ppl.items():
        ax.plot([(i + 1) * bucket for i in range(len(values))], values, marker=".", lw=1, label=name)
    ax.set(xlabel="position (tokens, bucket end)", ylabel="perplexity", yscale="log",
           title="Perplexity by position")
    ax.axvline(bucket, color="grey", ls=":", lw=1)
    if ppl:
        ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=DPI)


def markdown(metrics: dict, ms: dict[str, dict[str, float]], ppl: dict[str, list[float]], bucket: int,
             notes: list[str]) -> str:
    trained = metrics["trained_context"]
    lengths = sorted({int(L) for m in metrics["passkey"].values() for L in m})
    head = "| method | " + " | ".join(f"passkey {L // trained}x" for L in lengths) + \
        " | KB-QA EM | ms/query passkey | ms/query KB-QA |"
    lines = [head, "|" + "---|" * (len(lengths) + 4)]
    for name, row in metrics["passkey"].items():
        cells = " | ".join(f"{row[str(L)]:.0%}" for L in lengths)
        kb = f"{metrics['kb_qa'][name]:.0%}" if name in metrics["kb_qa"] else "not run"
        kb_ms = f"{ms['kb_qa'][name]:.0f}" if name in ms["kb_qa"] else "-"
        lines.append(f"| `{name}` | {cells} | {kb} | {ms['passkey'].get(name, 0):.0f} | {kb_ms} |")
    r = metrics["retrieval"]
    retrieval = (f"Retrieval ({r['chunks']} chunks, LanceDB table version {r['table_version']}): recall@1 "
                 f"**{r['recall@1']:.2f}**, recall@5 **{r['recall@5']:.2f}**, MRR **{r['mrr']:.3f}**, "
                 f"search latency p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms.")
    n = max((len(v) for v in ppl.values()), default=0)
    ppl_lines = ["| method | " + " | ".join(f"<{(i + 1) * bucket}" for i in range(n)) + " |", "|" + "---|" * (n + 1)]
    ppl_lines += [f"| `{k}` | " + " | ".join(f"{x:.2f}" for x in v) + " |" for k, v in ppl.items()]
    if not ppl:
        ppl_lines = ["Not measured (long_context.ppl_sequences: 0)."]
    return "\n".join([f"# Long context (trained context {trained} tokens)", "", *lines, "", retrieval, "",
                      "## Perplexity by position", "", *ppl_lines, "", "## Notes", "",
                      *[f"- {n}" for n in notes], ""])
