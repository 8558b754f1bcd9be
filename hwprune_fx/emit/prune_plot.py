"""``prune --plot``: one PNG of a budget search and of per-layer latency before/after.

    report -> (a) latency per search step: predicted line, measured points, budget, baseline
              (b) per-layer latency before/after, the slowest layers of the original (when given)

matplotlib is imported only here, with the Agg backend, and the PNG is written atomically
(a temporary file in the same folder, then ``os.replace``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

__all__ = ["plot_prune", "TOP_LAYERS"]

TOP_LAYERS = 12  # bars in panel (b): the slowest layers of the original

LayerTimes = Union[Mapping[str, float], Sequence[Mapping[str, Any]]]


def plot_prune(report: Mapping[str, Any], path: str | os.PathLike, layers_before: LayerTimes | None = None,
               layers_after: LayerTimes | None = None) -> Path:
    """Draw ``report`` (from ``prune_to_budget`` or ``prune --ratio``) to the PNG ``path``.

    Args:
        report: the prune report; ``steps``, ``budget_ms``, ``baseline`` and ``final`` are used
            when present, and ``layers`` (rows of ``layer``/``before_ms``/``after_ms``, as written by
            :func:`~hwprune_fx.profiling.compare.layer_latency_before_after`) when no per-layer
            times are passed.
        path: where the PNG goes.
        layers_before: per-layer ms of the original: ``{layer: ms}`` or rows with ``layer`` and ``ms``.
        layers_after: the same for the pruned network.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = _layer_pairs(report, layers_before, layers_after)
    fig, axes = plt.subplots(1, 2 if pairs else 1, figsize=(13 if pairs else 7, 4.5), squeeze=False)
    _plot_steps(axes[0][0], report)
    if pairs:
        _plot_layers(axes[0][1], pairs, report.get("target", ""))
    fig.tight_layout()
    dest = Path(path)
    tmp = str(dest.with_name(f".{dest.name}.{os.getpid()}.tmp.png"))  # same folder: os.replace is atomic
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, dest)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _plot_steps(ax: Any, report: Mapping[str, Any]) -> None:
    from matplotlib.ticker import MaxNLocator

    steps = list(report.get("steps") or [])
    xs = [s["step"] for s in steps]
    predicted = [(s["step"], s["predicted_ms"]) for s in steps if s.get("predicted_ms") is not None]
    measured = [(s["step"], s["measured_ms"]) for s in steps if s.get("measured_ms") is not None]
    if predicted:
        ax.plot(*zip(*predicted), "-", color="tab:blue", lw=1.2, label="predicted")
    if measured:
        ax.plot(*zip(*measured), "o", color="tab:orange", ms=5, label="measured")
    baseline = (report.get("baseline") or {}).get("median_ms")
    if baseline is not None:
        ax.axhline(baseline, color="gray", ls=":", lw=1.2, label=f"baseline {baseline:.3f} ms")
    if report.get("budget_ms") is not None:
        ax.axhline(report["budget_ms"], color="tab:red", ls="--", lw=1.2,
                   label=f"budget {report.get('budget', '')} = {report['budget_ms']:.3f} ms")
    # The final numbers come from a later, fresh session timed beside the original again: drawn
    # one step to the right, with that session's original, so they are compared with each other.
    final = (report.get("final") or {}).get("median_ms")
    fresh = (report.get("baseline_fresh") or {}).get("median_ms")
    x_final = (xs[-1] + 1) if xs else 0
    if fresh is not None:
        ax.plot([x_final], [fresh], "o", mfc="none", color="gray", ms=8,
                label=f"fresh session: original {fresh:.3f} ms")
    if final is not None:
        ax.plot([x_final], [final], "*", color="tab:green", ms=12, label=f"fresh session: pruned {final:.3f} ms")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not steps:
        ax.text(0.5, 0.5, "no search steps (pruned by --ratio)", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("search step (last: final measurement)" if final is not None else "search step")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"latency per step on {report.get('target', '?')} ({report.get('search', 'ratio')})")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _plot_layers(ax: Any, pairs: list[tuple[str, float | None, float | None]], target: str) -> None:
    top = sorted(pairs, key=lambda p: -(p[1] or 0.0))[:TOP_LAYERS]
    idx = range(len(top))
    width = 0.4
    ax.bar([i - width / 2 for i in idx], [p[1] or 0.0 for p in top], width, color="tab:gray", label="before")
    ax.bar([i + width / 2 for i in idx], [p[2] or 0.0 for p in top], width, color="tab:green", label="after")
    ax.set_xticks(list(idx))
    ax.set_xticklabels([_short(p[0]) for p in top], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("layer latency (ms)")
    ax.set_title(f"slowest {len(top)} layers, before/after{f' on {target}' if target else ''}")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)


def _layer_pairs(report: Mapping[str, Any], before: LayerTimes | None,
                 after: LayerTimes | None) -> list[tuple[str, float | None, float | None]]:
    """``(layer, before_ms, after_ms)`` from the arguments, else from ``report["layers"]``."""
    if before is None and after is None:
        return [(r["layer"], r.get("before_ms"), r.get("after_ms")) for r in report.get("layers") or []]
    b, a = _as_map(before), _as_map(after)
    names = list(b) + [n for n in a if n not in b]
    return [(n, b.get(n), a.get(n)) for n in names]


def _as_map(times: LayerTimes | None) -> dict[str, float]:
    if times is None:
        return {}
    if isinstance(times, Mapping):
        return {str(k): float(v) for k, v in times.items()}
    return {str(r["layer"]): float(r["ms"]) for r in times}


def _short(name: str, limit: int = 28) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1):]
