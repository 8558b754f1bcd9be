"""``hwprune-fx bench`` output: the comparison table (text, Markdown) and a PNG bar chart.

All three read the JSON form of a :class:`hwprune_fx.benchmark.BenchResult` (``to_dict()``), so a
saved ``bench.json`` renders the same table later.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from hwprune_fx.emit.table import format_table

__all__ = ["bench_table", "bench_markdown", "plot_bench"]

_HEADERS = ("pipeline", "median ms", "p10-p90 ms", "speedup", "predicted ms", "params", "MACs",
            "top-1 agree", "max abs err", "KL", "pass s")


def _num(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _cells(row: Mapping[str, Any]) -> list[str]:
    if not row["ok"]:
        return [row["pipeline"], f"error: {row['error']}"] + [""] * (len(_HEADERS) - 2)
    m, pred, fid = row["measured"], row["predicted"], row["fidelity"] or {}
    spread = "-" if m["p10_ms"] is None else f"{m['p10_ms']:.3f}-{m['p90_ms']:.3f}"
    predicted = "-" if pred["ms"] is None else f"{pred['ms']:.3f} ({pred['from']})"
    return [row["pipeline"], _num(m["median_ms"], ".3f"), spread, ("-" if row["speedup"] is None else f"{row['speedup']:.2f}x"),
            predicted, _num(row["params"], ","), _num(row["macs"], ","),
            _num(fid.get("top1_agreement"), ".3f"), _num(fid.get("max_abs_error"), ".3g"),
            _num(fid.get("kl_div"), ".3g"), f"{row['pass_seconds']:.2f}"]


def _pass_lines(data: Mapping[str, Any]) -> list[str]:
    lines = []
    for row in data["rows"]:
        if row["passes"]:
            parts = ", ".join(f"{p['name']} {p['seconds']:.2f}s{'' if p['modified'] else ' (no change)'}"
                              for p in row["passes"])
            lines.append(f"  {row['pipeline']}: {parts}")
    return lines


def _header(data: Mapping[str, Any]) -> str:
    return (f"{data['model']} on {data['target']}, {data['threads']} thread(s): {data['repeat']} interleaved "
            f"rounds x {data['runs_per_round']} runs; fidelity on {data['fidelity_inputs']}")


def bench_table(data: Mapping[str, Any]) -> str:
    """The terminal table, then the time of every pass per pipeline."""
    table = format_table(_HEADERS, [_cells(r) for r in data["rows"]], max_width=70)
    notes = ["predicted: (search) = the prune pass's last predicted step; (macs) = original's measured "
             "latency x MACs ratio"]
    return "\n".join([_header(data), "", table, "", *notes, "", "time per pass:", *_pass_lines(data)])


def bench_markdown(data: Mapping[str, Any]) -> str:
    """The same table as Markdown."""
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = [f"| {' | '.join(_HEADERS)} |", "|" + "---|" * len(_HEADERS)]
    for row in data["rows"]:
        cells = _cells(row)
        cells[0] = f"`{cells[0]}`"
        lines.append("| " + " | ".join(esc(c) for c in cells) + " |")
    return "\n".join([_header(data), "", *lines])


def plot_bench(data: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Bar chart of measured latency (median, p10-p90 whiskers) per pipeline, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in data["rows"] if r["ok"]]
    labels = [r["pipeline"] for r in rows]
    med = [r["measured"]["median_ms"] for r in rows]
    lo = [m - r["measured"]["p10_ms"] for m, r in zip(med, rows)]
    hi = [r["measured"]["p90_ms"] - m for m, r in zip(med, rows)]
    pred = [r["predicted"]["ms"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(rows) + 2), 4.5))
    xs = range(len(rows))
    ax.bar(xs, med, yerr=[lo, hi], capsize=4, color="tab:blue", label="measured (median, p10-p90)")
    px = [x for x, p in zip(xs, pred) if p is not None]
    ax.plot(px, [p for p in pred if p is not None], "D", color="tab:orange", label="predicted")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([lab if len(lab) <= 40 else lab[:39] + "…" for lab in labels], rotation=30, ha="right",
                       fontsize=7)
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{os.path.basename(str(data['model']))} on {data['target']} ({data['threads']} thread(s))")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = f"{os.fspath(path)}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
