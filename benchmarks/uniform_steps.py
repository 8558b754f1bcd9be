"""Every network the ``uniform`` baseline can reach, timed: where its latency staircase leaves gaps.

    python benchmarks/uniform_steps.py --model resnet18 --align 8 --budgets 80,60,40

``uniform`` keeps the same share of every group, rounded up to ``--align`` (Torch-Pruning's
``round_to``), so it can only land on the networks this script enumerates: one per distinct
set of kept widths as the ratio goes from 0 to 0.97. Each is timed beside the original
(``pooled_ratios``: an original block before every candidate block, ``--rounds`` rounds), and
for each budget the fullest network under it is reported with the next fuller one. When the
fullest is under 90% of the budget, *no* uniform network fills the budget better: the budget
table's "not over-pruned" line is out of the baseline's reach, whatever its search does.
Writes ``results/uniform_steps_<model>_align<N>.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from notes import kept_notes
from provenance import code_commit, cpu_label

from hwprune_fx.cost_models.flops import count_macs
from hwprune_fx.frontends.onnx_frontend import onnx_to_channel_graph
from hwprune_fx.pipeline import load_onnx_model, make_criterion, materialize
from hwprune_fx.plan import PruningPlan, plan_by_ratio
from hwprune_fx.analysis import analyze_dependencies
from hwprune_fx.calib import model_input_specs
from hwprune_fx.targets import TimingConfig, create_backend
from hwprune_fx.targets.side_by_side import pooled_ratios
from hwprune_fx.zoo import build_model, export_onnx, input_shape_for

#: the budget table's "not over-pruned" line
FILL = 0.90
#: candidates held compiled at once (memory) per pooled timing
POOL = 8


def breakpoints(sizes: list[int], top: float = 0.97) -> list[float]:
    """One ratio inside each interval where no group's kept count changes: just past every k/C."""
    edges = sorted({k / c for c in sizes for k in range(1, c) if k / c <= top})
    return [e + 1e-9 for e in edges]


def widths(plan: PruningPlan) -> str:
    """Kept widths by original group size, e.g. ``64->48 128->96``: uniform keeps groups of one size alike."""
    seen: dict[int, set[int]] = {}
    for g in plan.group_sizes():
        seen.setdefault(g["before"], set()).add(g["after"])
    return " ".join(f"{b}->{'/'.join(map(str, sorted(a)))}" for b, a in sorted(seen.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--align", type=int, default=8)
    ap.add_argument("--budgets", default="80,60,40", help="percentages of the measured baseline")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=10, help="runs per timed block")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"{args.model}.onnx"
        export_onnx(build_model(args.model), input_shape_for(args.model), src)
        loaded = load_onnx_model(src)
    analysis = analyze_dependencies(loaded.channel_graph)
    crit, _ = make_criterion("l1", loaded.original, None, model_input_specs(loaded.original), lambda m: None)
    scores = crit.score(analysis)
    macs_before = count_macs(loaded.channel_graph)

    plans: dict[bytes, tuple[float, PruningPlan]] = {}
    for r in breakpoints([g.size for g in analysis.prunable_groups()]):
        plan = plan_by_ratio(analysis, scores, r, args.align)
        plans.setdefault(np.sort(plan.removed_units).tobytes(), (r, plan))
    print(f"{args.model} --align {args.align}: {len(plans)} distinct uniform networks", flush=True)

    backend = create_backend("ort-cpu", timing=TimingConfig(warmup=3, repeat=args.repeat, threads=1),
                             use_cache=False)
    items = sorted(plans.values(), key=lambda rp: rp[0])
    rows = []
    for at in range(0, len(items), POOL):
        batch = items[at:at + POOL]
        models = [materialize(loaded.original, plan) for _, plan in batch]
        ratios, reference_ms = pooled_ratios(backend, loaded.original, models, rounds=args.rounds)
        for (r, plan), model, rs in zip(batch, models, ratios):
            macs = count_macs(onnx_to_channel_graph(gs.import_onnx(model)))
            rows.append({"ratio_from": round(r, 6), "widths": widths(plan), "macs_ratio": macs / macs_before,
                         "latency_ratio": statistics.median(rs), "latency_ratio_spread": max(rs) - min(rs),
                         "reference_ms": statistics.median(reference_ms)})
            print(f"ratio {r:.3f}  {rows[-1]['widths']:<40} MACs {rows[-1]['macs_ratio']:.3f}  "
                  f"latency {rows[-1]['latency_ratio']:.3f}", flush=True)

    budgets = []
    for pct in (float(b) for b in args.budgets.split(",") if b):
        under = [row for row in rows if row["latency_ratio"] <= pct / 100]
        over = [row for row in rows if row["latency_ratio"] > pct / 100]
        best = max(under, key=lambda row: row["latency_ratio"], default=None)
        nearest_over = min(over, key=lambda row: row["latency_ratio"], default=None)
        budgets.append({"budget_pct": pct, "fullest_under": best, "nearest_over": nearest_over,
                        "best_fill": best["latency_ratio"] / (pct / 100) if best else None})

    result = {"model": args.model, "align": args.align, "rounds": args.rounds, "repeat": args.repeat,
              "commit": code_commit(), "cpu": cpu_label(), "networks": rows, "budgets": budgets}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"uniform_steps_{args.model}_align{args.align}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    md_path = out / f"{stem}.md"
    md_path.write_text(markdown(result) + kept_notes(md_path))
    print(markdown(result))


def markdown(result: dict) -> str:
    """The budget summary first, then every network the baseline can reach."""
    md = [f"# Every `uniform` network of {result['model']} at `--align {result['align']}`, timed beside the original",
          "",
          f"ort-cpu, 1 thread, {result['cpu']}; code {result['commit']}. Each network: median over "
          f"{result['rounds']} rounds of its block ({result['repeat']} runs) over the original's block timed "
          "just before it. `ratio from`: the smallest uniform ratio that gives the network.",
          "",
          "| budget | fullest network under it | its latency | budget used | next fuller network | its latency |",
          "|---|---|---|---|---|---|"]
    for b in result["budgets"]:
        md.append(f"| {b['budget_pct']:.0f}% | {_network(b['fullest_under'])} | {_fill(b['best_fill'])} | "
                  f"{_network(b['nearest_over'])} |")
    md += ["", "| ratio from | kept widths | MACs after/before | latency after/before | spread (max-min) |",
           "|---|---|---|---|---|"]
    for row in result["networks"]:
        md.append(f"| {row['ratio_from']:.4f} | {row['widths']} | {row['macs_ratio']:.3f} | "
                  f"{row['latency_ratio']:.3f} | {row['latency_ratio_spread']:.3f} |")
    return "\n".join(md) + "\n"


def _network(row: dict | None) -> str:
    """Two table cells: kept widths and latency after/before."""
    return "- | -" if row is None else f"{row['widths']} | {100 * row['latency_ratio']:.1f}%"


def _fill(fill: float | None) -> str:
    return "-" if fill is None else f"{100 * fill:.0f}%" + (" (under 90%)" if fill < FILL else "")


if __name__ == "__main__":
    main()
