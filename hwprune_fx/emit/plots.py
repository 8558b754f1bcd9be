"""PNG plots (matplotlib, imported only when a plot is asked for)."""
from __future__ import annotations

import os

from hwprune_fx.profiling.sweep import Sweep

__all__ = ["plot_sweep"]


def plot_sweep(sweep: Sweep, path: str | os.PathLike, target: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.step(sweep.counts, sweep.ms, where="post", color="tab:blue", label="measured (median)")
    ax.plot(sweep.counts, sweep.ms, "o", ms=3, color="tab:blue")
    for c in sweep.steps():
        ax.axvline(c, color="tab:red", alpha=0.25, lw=1)
    ax.set_xlabel(f"kept {sweep.axis} channels")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{sweep.layer} on {target}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = f"{os.fspath(path)}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
