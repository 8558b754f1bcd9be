"""How closely one side-by-side timing reads a pruned/original ratio, by rounds: why fast networks
get rounds by time (``seconds_per_model``) rather than a fixed 2 or 3.

    python benchmarks/round_noise.py --model mobilenet_v2 --budget 60% --pairs 12

The model (random weights) is pruned to the budget once; then, in this one process, ``--pairs``
new session pairs (original, pruned) are timed side by side per setting, and the standard
deviation of their ratios is reported. The final check (3 pairs, the median ratio) is timed
``--checks`` times as the tool runs it. Writes ``results/round_noise.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import onnx
from provenance import code_commit

from hwprune_fx.prune_budget import prune_to_budget
from hwprune_fx.search.final_check import final_check
from hwprune_fx.targets import TimingConfig, create_backend
from hwprune_fx.targets.side_by_side import measure_side_by_side
from hwprune_fx.zoo import build_model, export_onnx, input_shape_for

#: (rounds, runs per block, seconds per model): the old fixed settings, more rounds, longer blocks
SETTINGS = [(2, 7, 0.0), (8, 7, 0.0), (16, 7, 0.0), (2, 28, 0.0), (2, 7, 0.75)]


def pair_ratios(original: onnx.ModelProto, pruned: onnx.ModelProto, rounds: int, runs: int, seconds: float,
                pairs: int) -> tuple[list[float], list[int]]:
    """``pairs`` new session pairs timed side by side: each pair's ratio and the rounds it took."""
    backend = create_backend("ort-cpu", timing=TimingConfig(warmup=3, repeat=runs, threads=1), use_cache=False)
    ratios, taken = [], []
    for _ in range(pairs):
        base, cand = measure_side_by_side(backend, [original, pruned], rounds=rounds, seconds_per_model=seconds)
        ratios.append(cand.median_ms / base.median_ms)
        taken.append(base.repeats)
    return ratios, taken


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--budget", default="60%")
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("--checks", type=int, default=8)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"{args.model}.onnx"
        export_onnx(build_model(args.model), input_shape_for(args.model), src)
        out = prune_to_budget(src, args.budget, cache_dir=Path(tmp) / "cache")
        original, pruned = onnx.load(str(src)), out["model"]
    rows = []
    for rounds, runs, seconds in SETTINGS:
        ratios, taken = pair_ratios(original, pruned, rounds, runs, seconds, args.pairs)
        rows.append({"rounds": rounds, "runs_per_block": runs, "seconds_per_model": seconds,
                     "rounds_taken": sorted(set(taken)), "ratios": ratios, "mean": statistics.mean(ratios),
                     "sd": statistics.stdev(ratios)})
        print(json.dumps(rows[-1]), flush=True)
    fresh = create_backend("ort-cpu", timing=TimingConfig(warmup=3, repeat=7, threads=1), use_cache=False)
    medians, seconds_per_check = [], []
    for _ in range(args.checks):
        t0 = time.perf_counter()
        check = final_check(fresh, original, pruned)
        seconds_per_check.append(time.perf_counter() - t0)
        medians.append(check.final.median_ms / check.base.median_ms)
    final = {"checks": args.checks, "median_ratios": medians, "sd": statistics.stdev(medians),
             "seconds_per_check": statistics.median(seconds_per_check)}
    print(json.dumps(final), flush=True)
    result = {"model": args.model, "budget": args.budget, "pairs": args.pairs, "commit": code_commit(),
              "oracle_max_rel_error": out["report"]["oracle"]["max_rel_error"], "settings": rows,
              "final_check": final}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "round_noise.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# Round noise: {args.model} pruned to {args.budget} (ort-cpu, 1 thread, code at {result['commit']})", "",
          f"{args.pairs} new session pairs (original, pruned) per setting, timed side by side in one process; "
          "sd is the standard deviation of the pairs' pruned/original ratios.", "",
          "| rounds | runs per block | seconds per model | rounds taken | mean ratio | sd |", "|---|---|---|---|---|---|"]
    md += [f"| {r['rounds']} | {r['runs_per_block']} | {r['seconds_per_model']} | "
           f"{', '.join(map(str, r['rounds_taken']))} | {r['mean']:.4f} | {r['sd']:.4f} |" for r in rows]
    md += ["", f"The final check as the tool runs it (3 pairs, median ratio, rounds by time), {args.checks} times: "
           f"sd of its median ratio {final['sd']:.4f}, {final['seconds_per_check']:.1f} s per check (median).", ""]
    (out_dir / "round_noise.md").write_text("\n".join(md))


if __name__ == "__main__":
    main()
