"""Does measuring MetaSchedule's trials in smaller batches find faster schedules for the same budget?

MetaSchedule chooses each batch of candidates with its XGBoost cost model and refits the model
on the batch's measurements. With ``num_trials_per_iter`` equal to the trial budget (64 of 64,
what ``tvm-llvm`` did until now) the only batch is chosen by an untrained model: close to a
random search. Smaller batches let the model steer the later ones, at the cost of one
evolutionary-search round per batch.

One workload, ResNet-18's first 3x3 conv (64 -> 64 channels at 56x56, with BatchNorm and ReLU
fused), is tuned with ``--trials`` trials into a fresh database once per batch size in
``--batches``; each tuned module and onnxruntime are then timed side by side in ``--rounds``
alternating rounds (median of round medians). Writes ``results/tvm_batch.{json,md}``.

    python benchmarks/tvm_batch.py --trials 64 --batches 64,16
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

from hwprune_fx.targets.tvm_llvm import TvmLlvmBackend

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=64)
    ap.add_argument("--batches", default="64,16", help="trials per search iteration, one tuning run each")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tvm_batch_"))
    bench = conv_bench(work, args.repeat)
    model, feeds, timing = bench.model, bench.feeds, bench.timing
    runs: dict[str, dict] = {}
    for batch in [int(b) for b in args.batches.split(",")]:
        tvm = TvmLlvmBackend(timing=timing, cache_dir=work / f"tvm_batch{batch}", use_cache=False,
                             tune_trials=args.trials, tune_batch=batch, progress=print)
        t0 = time.perf_counter()
        tvm.measure(model, feeds)   # tunes into a fresh database, compiles, times once
        report = tvm.tuning_report()
        runs[f"batch {batch}"] = {"backend": tvm, "batch": batch, "tuning_seconds": round(report.tuning_seconds, 1),
                                  "wall_seconds": round(time.perf_counter() - t0, 1), "ms": []}
        print(f"batch {batch}: tuned in {report.tuning_seconds:.0f} s", flush=True)
    ort_ms = bench.time_beside_onnxruntime(runs, args.rounds)
    ort_median = statistics.median(ort_ms)
    rows = [{"setting": key, "trials": args.trials, "batch": run["batch"], "tuning_seconds": run["tuning_seconds"],
             **timing_cells(run["ms"], ort_median)} for key, run in runs.items()]
    result = {"benchmark": "tvm_batch", "workload": WORKLOAD,
              "commit": code_commit(), "cpu": cpu_label(), "timing": timing.key(), "rounds": args.rounds,
              "ort_round_ms": [round(x, 4) for x in ort_ms], "rows": rows,
              "llvm_target": next(iter(runs.values()))["backend"].target_dict(),
              "wall_seconds": round(time.perf_counter() - t_start, 1)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tvm_batch.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# MetaSchedule trials in batches: one workload, {args.trials} trials, fresh database each", "",
          f"{result['workload']}; {result['cpu']}; LLVM target `{json.dumps(result['llvm_target'])}`; 1 thread; "
          f"commit {result['commit']}. Tuned module and onnxruntime timed side by side in {args.rounds} alternating "
          f"rounds of {args.repeat} runs (median of round medians).", "",
          "| trials per batch | batches | tuning s | TVM ms | onnxruntime ms | TVM / ORT |", "|---|---|---|---|---|---|"]
    for row in rows:
        md.append(f"| {row['batch']} | {-(-args.trials // row['batch'])} | {row['tuning_seconds']} | "
                  f"{row['tvm_ms']:.3f} | {row['ort_ms']:.3f} | {row['tvm_over_ort']} |")
    (out / "tvm_batch.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
