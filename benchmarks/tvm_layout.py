"""Which conv layout MetaSchedule tunes best in the same trial budget: ONNX's NCHW, or NHWC.

The ``tvm-llvm`` target converts every conv to ``tvm_relax.CONV_LAYOUT`` (NHWC data, HWIO
weights) before tuning. This measures why, on one workload: ResNet-18's first 3x3 conv (64 ->
64 channels at 56x56, BatchNorm and ReLU fused; ``one_conv.conv_block``), tuned with
``--trials`` trials into a fresh database per layout, ``--tunings`` times each (MetaSchedule's
search is random: one tuning run of a layout can find a schedule 40% slower than the next). NHWC adds a transpose at each end of the
network; they are tuned and timed too, as in a whole network (where only its two ends pay).
Each tuned module and onnxruntime are timed side by side in ``--rounds`` alternating rounds
(median of round medians). Writes ``results/tvm_layout.{json,md}``.

    python benchmarks/tvm_layout.py --trials 64
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from one_conv import WORKLOAD, conv_bench, timing_cells
from provenance import code_commit, cpu_label

from hwprune_fx.oracle import run_onnx
from hwprune_fx.targets.tvm_llvm import TvmLlvmBackend
from hwprune_fx.targets.tvm_relax import CONV_LAYOUT

RESULTS = Path(__file__).parent / "results"
LAYOUTS = {"NCHW/OIHW (as imported)": None, "/".join(CONV_LAYOUT): CONV_LAYOUT}


def layout_of(key: str) -> str:
    """The layout part of a run's key ("NHWC/HWIO #2" -> "NHWC/HWIO")."""
    return key.rsplit(" #", 1)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=64)
    ap.add_argument("--tunings", type=int, default=3, help="tuning runs per layout, each into a fresh database")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tvm_layout_"))
    bench = conv_bench(work, args.repeat)
    model, feeds, timing = bench.model, bench.feeds, bench.timing
    reference = run_onnx(model, feeds)[0]
    runs: dict[str, dict] = {}
    for t in range(1, args.tunings + 1):
        for i, (name, layout) in enumerate(LAYOUTS.items()):
            tvm = TvmLlvmBackend(timing=timing, cache_dir=work / f"tvm{i}_{t}", use_cache=False,
                                 tune_trials=args.trials, conv_layout=layout, progress=print)
            out = tvm.run(model, feeds)[0]   # tunes into a fresh database and compiles
            report = tvm.tuning_report()
            runs[f"{name} #{t}"] = {"backend": tvm, "workloads": report.workloads_total,
                                    "tuning_seconds": round(report.tuning_seconds, 1),
                                    "max_abs_error_vs_onnxruntime": float(abs(out - reference).max()), "ms": []}
            print(f"{name} #{t}: {report.workloads_total} workloads tuned in {report.tuning_seconds:.0f} s",
                  flush=True)
    ort_ms = bench.time_beside_onnxruntime(runs, args.rounds)
    ort_median = statistics.median(ort_ms)
    rows = [{"layout": layout_of(key), "tuning": key, "workloads": run["workloads"],
             "tuning_seconds": run["tuning_seconds"], **timing_cells(run["ms"], ort_median),
             "max_abs_error_vs_onnxruntime": run["max_abs_error_vs_onnxruntime"]} for key, run in runs.items()]
    result = {"benchmark": "tvm_layout", "workload": WORKLOAD,
              "trials_per_task": args.trials, "commit": code_commit(), "cpu": cpu_label(), "timing": timing.key(),
              "rounds": args.rounds, "ort_round_ms": [round(x, 4) for x in ort_ms], "rows": rows,
              "llvm_target": next(iter(runs.values()))["backend"].target_dict(),
              "wall_seconds": round(time.perf_counter() - t_start, 1)}
    summary = {name: sorted(r["tvm_over_ort"] for r in rows if r["layout"] == name) for name in LAYOUTS}
    result["tvm_over_ort_by_layout"] = summary
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tvm_layout.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# Conv layout for MetaSchedule: one workload, {args.trials} trials per task, fresh database each", "",
          f"{result['workload']}; {result['cpu']}; LLVM target `{json.dumps(result['llvm_target'])}`; 1 thread; "
          f"commit {result['commit']}. Tuned module and onnxruntime timed side by side in {args.rounds} "
          f"alternating rounds of {args.repeat} runs (median of round medians). NHWC's workloads include the "
          "transposes at the network's two ends.", "",
          *(f"- {name}: TVM / ORT {', '.join(map(str, ratios))} over {len(ratios)} tuning runs"
            for name, ratios in summary.items()), "",
          "| tuning run | workloads | tuning s | TVM ms | onnxruntime ms | TVM / ORT | max abs error vs ORT |",
          "|---|---|---|---|---|---|---|"]
    for row in rows:
        md.append(f"| {row['tuning']} | {row['workloads']} | {row['tuning_seconds']} | {row['tvm_ms']:.3f} | "
                  f"{row['ort_ms']:.3f} | {row['tvm_over_ort']} | {row['max_abs_error_vs_onnxruntime']:.2g} |")
    (out_dir / "tvm_layout.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
