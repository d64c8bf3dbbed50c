"""The quantization results for people: a markdown table and the memory-vs-perplexity frontier."""
from __future__ import annotations

from pathlib import Path


def pareto(metrics: dict) -> list[str]:
    """Schemes no other scheme beats on both total bytes and perplexity, smallest first."""
    s = metrics["schemes"]
    names = sorted(s, key=lambda n: (s[n]["total_bytes"], s[n]["perplexity"]))
    front, best = [], float("inf")
    for n in names:
        if s[n]["perplexity"] < best:
            front.append(n)
            best = s[n]["perplexity"]
    return front


def plot_rows(metrics: dict) -> list[dict]:
    return [{"scheme": n, "total_kib": round(m["total_bytes"] / 1024, 1), "perplexity": m["perplexity"]}
            for n, m in metrics["schemes"].items()]


def markdown_table(metrics: dict) -> str:
    base = metrics["schemes"][metrics["baseline"]]
    front = set(pareto(metrics))
    full = base.get("full_context_tokens")
    head = ("| scheme | weights KiB | KV KiB | total KiB | total vs base | "
            + (f"KV KiB @{full} | total KiB @{full} | total vs base @{full} | " if full else "")
            + "perplexity | ppl vs base | OOD ppl | KB-QA EM | tokens/s | quantize s |\n|---|"
            + "---:|" * (13 if full else 10) + "\n")
    rows = []
    for name, m in metrics["schemes"].items():
        mark = " *" if name in front else ""
        rows.append(f"| `{name}`{mark} | {m['weight_bytes'] / 1024:.1f} | {m['kv_bytes'] / 1024:.1f} | "
                    f"{m['total_bytes'] / 1024:.1f} | {m['total_bytes'] / base['total_bytes'] - 1:+.1%} | "
                    + (f"{m['kv_bytes_full'] / 1024:.1f} | {m['total_bytes_full'] / 1024:.1f} | "
                       f"{m['total_bytes_full'] / base['total_bytes_full'] - 1:+.1%} | " if full else "")
                    + f"{m['perplexity']:.3f} | {m['perplexity'] / base['perplexity'] - 1:+.2%} | "
                    f"{m['ood_perplexity']:.2f} | {m['kb_qa_exact_match']:.1%} | {m['tokens_per_s']:.1f} | "
                    f"{m['quantize_seconds']:.1f} |")
    emb = max((m.get("float_embedding_share", 0.0) for m in metrics["schemes"].values()), default=0.0)
    note = (f"\nWhere a scheme leaves the input embedding (tied to the LM head when the model ties them) in floating "
            f"point, it is up to {emb:.0%} of a variant's weight bytes (`float_embedding_share`).\n"
            if emb else "")
    return (f"# Quantization grid\n\nBaseline `{metrics['baseline']}`; KV bytes at {metrics['context_tokens']} "
            f"tokens (batch 1)" + (f" and at the model's full context, {full} tokens" if full else "")
            + "; `*` = on the memory/perplexity Pareto frontier.\n\n" + head + "\n".join(rows) + "\n" + note)


def frontier_plot(metrics: dict, path: Path) -> None:
    from lmops.io import pyplot, save_figure

    plt = pyplot()
    s = metrics["schemes"]
    front = pareto(metrics)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, m in s.items():
        ax.scatter(m["total_bytes"] / 1024, m["perplexity"], s=25, color="C3" if name in front else "C0")
        ax.annotate(name, (m["total_bytes"] / 1024, m["perplexity"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.plot([s[n]["total_bytes"] / 1024 for n in front], [s[n]["perplexity"] for n in front], "C3--", lw=1,
            label="Pareto frontier")
    ax.set(xlabel=f"inference memory: weights + KV cache at {metrics['context_tokens']} tokens (KiB)",
           ylabel="test perplexity", title="Quantization: memory vs perplexity")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def write_plot_csv(metrics: dict, path: Path) -> None:
    """The frontier plot's data as CSV (DVC plots read it)."""
    from lmops.io import write_csv

    write_csv(path, ["scheme", "total_kib", "perplexity"],
              [[r["scheme"], r["total_kib"], r["perplexity"]] for r in plot_rows(metrics)])
