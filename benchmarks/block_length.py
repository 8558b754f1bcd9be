"""How long must a timed block be before a pruned/original ratio stops moving? Sets the blocks of
the search's confirmations and of the final check.

    python benchmarks/block_length.py --cases mobilenet_v2:40%:opti-cut --checks 4 --blocks 3,10,30,3+50ms

Per case, the model (random weights) is pruned to the budget once; then the pruned network gets
``--checks`` final checks (the tool's: 3 session pairs beside the original in a fresh process,
median ratio) for every block setting, the settings taken in turn (3, 10, ..., 3, 10, ...) so
drift touches all alike. A setting ``N`` times blocks of N runs; ``N+Tms`` times N runs and goes
on until T milliseconds have been timed (``TimingConfig.min_seconds``). A pruned network runs
a few milliseconds: a block of 3 runs is then a few milliseconds after the other network's
block, and reads the caches that network left. Reported: each setting's median ratio, the
range over checks, and the median seconds a check took. Writes ``results/block_length.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from cells import median_range
from provenance import code_commit

from hwprune_fx.pipeline import load_onnx_model
from hwprune_fx.prune_budget import prune_to_budget
from hwprune_fx.search.final_check import final_check
from hwprune_fx.targets import TimingConfig, create_backend
from hwprune_fx.zoo import build_model, export_onnx, input_shape_for


def parse_block(text: str) -> TimingConfig:
    """``"10"`` -> 10 runs; ``"3+50ms"`` -> 3 runs and at least 50 ms timed."""
    runs, _, ms = text.partition("+")
    return TimingConfig(warmup=3, repeat=int(runs), threads=1,
                        min_seconds=float(ms.removesuffix("ms")) / 1e3 if ms else 0.0)


def run_case(model: str, budget: str, search: str, checks: int, blocks: list[str], tmp: Path) -> dict:
    """One search, then ``checks`` fresh-process final checks per block setting, the settings in turn."""
    src = tmp / f"{model}.onnx"
    export_onnx(build_model(model), input_shape_for(model), src)
    res = prune_to_budget(src, budget, search=search, repeat=15)
    original = load_onnx_model(src, None).original
    ratios: dict[str, list[float]] = {b: [] for b in blocks}
    seconds: dict[str, list[float]] = {b: [] for b in blocks}
    for i in range(checks):
        for block in blocks:
            backend = create_backend("ort-cpu", timing=parse_block(block), use_cache=False)
            t0 = time.perf_counter()
            check = final_check(backend, original, res["model"], process="fresh")
            seconds[block].append(time.perf_counter() - t0)
            ratios[block].append(check.final.median_ms / check.base.median_ms)
            print(f"{model} {budget} {search} check {i + 1}/{checks}, blocks {block}: {ratios[block][-1]:.4f} "
                  f"({check.final.median_ms:.3f} / {check.base.median_ms:.3f} ms, {seconds[block][-1]:.1f} s)",
                  flush=True)
    return {"model": model, "budget": budget, "search": search, "checks": checks, "blocks": blocks,
            "tool_final_ms": res["report"]["final"]["median_ms"],
            "ratios": ratios, "medians": {b: statistics.median(v) for b, v in ratios.items()},
            "check_seconds": {b: statistics.median(v) for b, v in seconds.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", help="model:budget:search, comma-separated",
                    default="mobilenet_v2:40%:opti-cut,efficientnet_b0:40%:opti-cut,resnet18:40%:opti-cut")
    ap.add_argument("--checks", type=int, default=4, help="final checks per block setting")
    ap.add_argument("--blocks", default="3,10,30,3+50ms,3+100ms", help="block settings, comma-separated")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    blocks = args.blocks.split(",")
    for b in blocks:
        parse_block(b)   # a typo fails before the searches
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            model, budget, search = case.split(":")
            rows.append({**run_case(model, budget, search, args.checks, blocks, Path(tmp)), "commit": code_commit()})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "block_length.json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    md = ["# Timed block length against the pruned/original ratio (ort-cpu, 1 thread)", "",
          "Per case: one search, then final checks of the pruned network (3 session pairs beside the "
          "original in a fresh process, median ratio) with each block setting in turn. `N`: blocks of N "
          "runs; `N+Tms`: N runs and on until T ms were timed. Cells: median ratio over the checks "
          "(lowest-highest); the last column is relative to the longest setting's median.", "",
          "| model | budget | search | checks | blocks | ratio | vs last setting | check s | commit |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        last = r["medians"][r["blocks"][-1]]
        for b in r["blocks"]:
            md.append(f"| {r['model']} | {r['budget']} | {r['search']} | {r['checks']} | {b} | "
                      f"{median_range(r['ratios'][b])} | {100 * (r['medians'][b] / last - 1):+.2f}% | "
                      f"{r['check_seconds'][b]:.1f} | {r['commit']} |")
    (out / "block_length.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
