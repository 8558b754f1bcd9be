"""How many MetaSchedule trials a conv needs before tuned TVM catches up with onnxruntime.

ResNet-18's 64->64 3x3 conv (``one_conv``) is tuned on ``tvm-llvm`` (convs in NHWC, the
target's default) into a fresh database once per trial budget in ``--trials``, in the
target's batches of 64 (so a budget of 256 is four batches, the cost model refitted between
them). Each tuned module and onnxruntime are timed side by side in ``--rounds`` alternating
rounds. At 64 trials the same conv ran 1.34-1.98x onnxruntime's time over 3 tuning runs
(``tvm_layout.md``); this says whether a larger budget closes the gap, and so whether tuning
a whole network longer (``tvm_vs_ort.py --trials N``) is worth its hours.
Writes ``results/tvm_trials.{json,md}``.

    python benchmarks/tvm_trials.py --trials 256,512
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
    ap.add_argument("--trials", default="256,512", help="trial budgets per task, one tuning run each")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tvm_trials_"))
    bench = conv_bench(work, args.repeat)
    runs: dict[str, dict] = {}
    for trials in [int(t) for t in args.trials.split(",")]:
        tvm = TvmLlvmBackend(timing=bench.timing, cache_dir=work / f"tvm{trials}", use_cache=False,
                             tune_trials=trials, progress=print)
        tvm.measure(bench.model, bench.feeds)   # tunes into a fresh database, compiles, times once
        report = tvm.tuning_report()
        runs[f"{trials} trials"] = {"backend": tvm, "trials": trials, "workloads": report.workloads_total,
                                    "tuning_seconds": round(report.tuning_seconds, 1), "ms": []}
        print(f"{trials} trials: tuned in {report.tuning_seconds:.0f} s", flush=True)
    ort_ms = bench.time_beside_onnxruntime(runs, args.rounds)
    ort_median = statistics.median(ort_ms)
    rows = [{"trials": run["trials"], "workloads": run["workloads"], "tuning_seconds": run["tuning_seconds"],
             **timing_cells(run["ms"], ort_median)} for run in runs.values()]
    result = {"benchmark": "tvm_trials", "workload": WORKLOAD, "commit": code_commit(), "cpu": cpu_label(),
              "timing": bench.timing.key(), "rounds": args.rounds, "ort_round_ms": [round(x, 4) for x in ort_ms],
              "rows": rows, "llvm_target": next(iter(runs.values()))["backend"].target_dict(),
              "conv_layout": next(iter(runs.values()))["backend"].settings()["conv_layout"],
              "wall_seconds": round(time.perf_counter() - t_start, 1)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tvm_trials.json").write_text(json.dumps(result, indent=2) + "\n")
    md = ["# MetaSchedule trial budget against onnxruntime: one conv, fresh database per budget", "",
          f"{WORKLOAD}; convs in {result['conv_layout']}; {result['cpu']}; LLVM target "
          f"`{json.dumps(result['llvm_target'])}`; 1 thread; commit {result['commit']}. Tuned modules and "
          f"onnxruntime timed side by side in {args.rounds} alternating rounds of {args.repeat} runs.", "",
          "| trials per task | workloads | tuning s | TVM ms | onnxruntime ms | TVM / ORT |", "|---|---|---|---|---|---|"]
    md += [f"| {r['trials']} | {r['workloads']} | {r['tuning_seconds']} | {r['tvm_ms']:.3f} | {r['ort_ms']:.3f} | "
           f"{r['tvm_over_ort']} |" for r in rows]
    (out / "tvm_trials.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
