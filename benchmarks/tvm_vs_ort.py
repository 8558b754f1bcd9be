"""Tuned TVM (``tvm-llvm``) against onnxruntime (``ort-cpu``) on ResNet-18, and what a pruned variant costs.

Four measurements, one process, one thread count (TVM's runtime fixes it once):

1. ``ort-cpu`` latency of torchvision resnet18 (random weights, 1x3x224x224);
2. ``tvm-llvm`` *untuned* (``tune_trials=0``, ``allow_untuned=True``, empty database):
   naive loops, shown for scale only -- never used as a cost anywhere;
3. ``tvm-llvm`` tuned with ``--trials`` per task into a fresh persistent database:
   tuning wall time, workloads tuned, latency;
4. the ``prune_onnx(ratio=0.25)`` variant on ``tvm-llvm`` with the same, now warm, database
   (workloads already covered vs newly tuned, the tuning this needed, latency) and on
   ``ort-cpu``.

After tuning, ``ort-cpu`` and tuned ``tvm-llvm`` are timed side by side with the same
``TimingConfig`` in ``--rounds`` alternating rounds (order reversed every other round, so
drift from other load on the machine hits both); the reported latency is the median of the
round medians. Writes ``results/tvm_vs_ort.json`` and ``results/tvm_vs_ort.md``.

    python benchmarks/tvm_vs_ort.py                    # 32 trials/task, ~15-35 min on 2 cores
    python benchmarks/tvm_vs_ort.py --estimate-only    # task counts and a time estimate, no tuning
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from notes import kept_notes
from provenance import code_commit, cpu_label

from hwprune_fx.errors import BackendError
from hwprune_fx.oracle import random_inputs
from hwprune_fx.pipeline import load_onnx_model, prune_onnx
from hwprune_fx.targets import TimingConfig
from hwprune_fx.targets.ort_cpu import OrtCpuBackend
from hwprune_fx.targets.tvm_llvm import TvmLlvmBackend
from hwprune_fx.zoo import build_model, export_onnx, input_shape_for

_T0 = time.perf_counter()
UNTUNED_NOTE = ("TVM untuned = naive loops (no schedule in the database); shown for scale only, "
                "never used as a cost")


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f} s] {msg}", flush=True)


def versions() -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("apache-tvm", "apache-tvm-ffi", "onnxruntime", "onnx", "torch", "torchvision", "numpy",
                 "hwprune-fx"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    try:
        out["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                           cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out["git_commit"] = None
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        out["cpu"] = names[0] if names else None
    out["cpu_count"] = os.cpu_count()
    return out


def loadavg() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def mdict(m: Any) -> dict[str, Any]:
    d = m.to_dict()
    d.pop("settings", None)  # recorded once per backend
    return d


def compile_with_report(backend: TvmLlvmBackend, model: onnx.ModelProto,
                        feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Compile (tuning what the database lacks); wall time, tuning report, and any refusal."""
    t0 = time.perf_counter()
    error = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            backend.compile(model, feeds)
        except BackendError as exc:
            error = str(exc)
    report = backend.tuning_report()
    return {"compile_wall_seconds": round(time.perf_counter() - t0, 1),
            "tuning": report.to_dict() if report else None, "error": error,
            "warnings": [str(w.message) for w in caught]}


def max_error(a: list[np.ndarray], b: list[np.ndarray]) -> dict[str, float]:
    abs_err = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
    scale = max(float(np.max(np.abs(y))) for y in b) or 1.0
    return {"max_abs_error": abs_err, "max_rel_error": abs_err / scale}


def task_overlap(backend: TvmLlvmBackend, full: onnx.ModelProto, pruned: onnx.ModelProto,
                 feeds_full: dict[str, np.ndarray], feeds_pruned: dict[str, np.ndarray]) -> dict[str, int]:
    """Distinct tuning tasks of each network and how many of the pruned one's the full one covers."""
    from tvm.s_tir import meta_schedule as ms

    from hwprune_fx.targets import tvm_relax, tvm_tune

    tvm = backend._tvm
    target = tvm.target.Target(backend.target_dict())
    tasks = {}
    for name, model, feeds in (("full", full, feeds_full), ("pruned", pruned, feeds_pruned)):
        modules = tvm_relax.import_onnx(tvm, model, feeds, target)
        tasks[name] = tvm_tune.extract_tasks(tvm, modules.legalized, target)
    db = ms.database.MemoryDatabase(module_equality=tvm_tune.MODULE_EQUALITY)
    for task in tasks["full"]:
        db.commit_workload(task.dispatched[0])
    shared = sum(bool(db.has_workload(task.dispatched[0])) for task in tasks["pruned"])
    return {"tasks_full": len(tasks["full"]), "tasks_pruned": len(tasks["pruned"]),
            "pruned_tasks_shared_with_full": shared, "pruned_tasks_new": len(tasks["pruned"]) - shared}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--trials", type=int, default=32, help="MetaSchedule trials per task (default 32)")
    ap.add_argument("--tune-batch", type=int, default=None,
                    help="trials measured per search iteration (default: tvm_tune.TRIALS_PER_BATCH)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ratio", type=float, default=0.25, help="prune_onnx ratio of the pruned variant")
    ap.add_argument("--cache-dir", default=None,
                    help="where the tuning database goes (default: a fresh folder under the system temp dir)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3, help="alternating ort/tvm timing rounds after tuning")
    ap.add_argument("--untuned-warmup", type=int, default=1,
                    help="untuned TVM runs for seconds per inference: fewer runs (default 1 warm-up)")
    ap.add_argument("--untuned-repeat", type=int, default=5, help="timed untuned TVM runs (default 5)")
    ap.add_argument("--skip-untuned", action="store_true")
    ap.add_argument("--sec-per-trial", type=float, default=2.0, help="for the printed time estimate only")
    ap.add_argument("--estimate-only", action="store_true",
                    help="count tuning tasks (full, pruned, shared) and estimate the tuning time; no tuning")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    cache_dir = Path(args.cache_dir) if args.cache_dir else Path(tempfile.mkdtemp(prefix="tvm_vs_ort_",
                                                                                   dir=tempfile.gettempdir()))
    cache_dir.mkdir(parents=True, exist_ok=True)
    untuned_dir = Path(tempfile.mkdtemp(prefix="tvm_vs_ort_untuned_", dir=tempfile.gettempdir()))
    timing = TimingConfig(warmup=args.warmup, repeat=args.repeat, threads=args.threads)
    untuned_timing = TimingConfig(warmup=args.untuned_warmup, repeat=args.untuned_repeat, threads=args.threads)
    load_start = loadavg()
    log(f"cache dir {cache_dir}; trials/task {args.trials}; threads {args.threads}; load {load_start}")

    # -- models ----------------------------------------------------------------------------------
    shape = input_shape_for(args.model)
    path = cache_dir / f"{args.model}.onnx"
    export_onnx(build_model(args.model), shape, path)
    full = load_onnx_model(path).original
    pruned_result = prune_onnx(path, ratio=args.ratio)
    pruned = pruned_result.model
    feeds_full = random_inputs(full, batch=1)
    feeds_pruned = random_inputs(pruned, batch=1)
    rep = pruned_result.report
    model_info = {"name": args.model, "input_shape": list(shape), "weights": "random (zoo.build_model, seed 0)",
                  "prune_ratio": args.ratio, "params_full": rep["params_before"], "params_pruned": rep["params_after"],
                  "macs_full": rep["macs_before"], "macs_pruned": rep["macs_after"],
                  "pruned_oracle": rep["oracle"]}
    log(f"models ready: MACs {rep['macs_before'] / 1e9:.3f} G -> {rep['macs_after'] / 1e9:.3f} G")

    ort = OrtCpuBackend(timing=timing, cache_dir=cache_dir, use_cache=False)
    tuned = TvmLlvmBackend(timing=timing, cache_dir=cache_dir, use_cache=False, tune_trials=args.trials,
                           tune_batch=args.tune_batch, progress=log)
    db_dir = tuned.database_dir()
    db_was_fresh = not (db_dir / "database_workload.json").exists()
    overlap = task_overlap(tuned, full, pruned, feeds_full, feeds_pruned)
    est = (overlap["tasks_full"] + overlap["pruned_tasks_new"]) * args.trials * args.sec_per_trial
    log(f"tasks: {overlap}; tuning estimate ~{est / 60:.0f} min at {args.sec_per_trial} s/trial")
    if args.estimate_only:
        print(json.dumps({"task_overlap": overlap, "estimated_tuning_seconds": est,
                          "sec_per_trial_assumed": args.sec_per_trial, "trials_per_task": args.trials}, indent=2))
        return

    result: dict[str, Any] = {
        "benchmark": "tvm_vs_ort", "model": model_info, "trials_per_task": args.trials,
        "trials_per_batch": tuned.tune_batch, "cpu": cpu_label(), "commit": code_commit(), "threads": args.threads,
        "timing": timing.key(), "rounds": args.rounds, "cache_dir": str(cache_dir),
        "tvm_database_dir": str(db_dir), "database_fresh_at_start": db_was_fresh, "task_overlap": overlap,
        "estimated_tuning_seconds": est, "versions": versions(), "loadavg_start": load_start,
    }

    # -- (2) untuned TVM: scale only ---------------------------------------------------------------
    if not args.skip_untuned:
        untuned = TvmLlvmBackend(timing=untuned_timing, cache_dir=untuned_dir, use_cache=False, tune_trials=0,
                                 allow_untuned=True)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = untuned.measure(full, feeds_full)
        report = untuned.tuning_report()
        result["tvm_untuned"] = {
            "note": UNTUNED_NOTE, "used_as_cost": False, "timing": untuned_timing.key(), "measurement": mdict(m),
            "untuned_workloads": m.settings.get("untuned_workloads"),
            "tuning": report.to_dict() if report else None, "wall_seconds": round(time.perf_counter() - t0, 1),
            "warnings": [str(w.message) for w in caught], "cache_dir": str(untuned_dir)}
        log(f"TVM untuned: {m.median_ms:.1f} ms ({m.settings.get('untuned_workloads')} untuned workloads)")

    # -- (3) tune the full network into a fresh database --------------------------------------------
    log(f"tuning {args.model}: {overlap['tasks_full']} tasks x {args.trials} trials ...")
    result["tvm_tuned_full"] = compile_with_report(tuned, full, feeds_full)
    log(f"full: {result['tvm_tuned_full']}")

    # -- (4) the pruned variant against the warm database -------------------------------------------
    log("tuning pruned variant against the warm database ...")
    result["tvm_tuned_pruned"] = compile_with_report(tuned, pruned, feeds_pruned)
    log(f"pruned: {result['tvm_tuned_pruned']}")

    # -- correctness of the tuned code against onnxruntime -------------------------------------------
    for key, model, feeds in (("tvm_tuned_full", full, feeds_full), ("tvm_tuned_pruned", pruned, feeds_pruned)):
        if result[key]["error"] is None:
            ref = ort.session(model).run(None, feeds)
            result[key]["vs_ort_output"] = max_error(tuned.run(model, feeds), ref)

    # -- side by side: ort-cpu and tuned tvm-llvm, same TimingConfig, alternating ---------------------
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in ("ort_full", "tvm_full", "ort_pruned", "tvm_pruned")}
    plan = [("ort_full", ort, full, feeds_full), ("tvm_full", tuned, full, feeds_full),
            ("ort_pruned", ort, pruned, feeds_pruned), ("tvm_pruned", tuned, pruned, feeds_pruned)]
    plan = [p for p in plan if not (p[0] == "tvm_full" and result["tvm_tuned_full"]["error"])
            and not (p[0] == "tvm_pruned" and result["tvm_tuned_pruned"]["error"])]
    for r in range(args.rounds):
        for key, backend, model, feeds in (plan if r % 2 == 0 else plan[::-1]):
            m = backend.measure(model, feeds)
            d = mdict(m)
            if key.startswith("tvm"):
                d["untuned_workloads"] = m.settings.get("untuned_workloads")
            runs[key].append(d)
            log(f"round {r + 1} {key}: {m.median_ms:.2f} ms (p10 {m.p10_ms:.2f}, p90 {m.p90_ms:.2f})")
    medians = {k: (statistics.median(d["median_ms"] for d in v) if v else None) for k, v in runs.items()}

    def ratio(a: str, b: str) -> float | None:
        return medians[a] / medians[b] if medians[a] and medians[b] else None

    def round_ratios(a: str, b: str) -> list[float]:
        return [x["median_ms"] / y["median_ms"] for x, y in zip(runs[a], runs[b])]

    result["side_by_side"] = {
        "runs": runs, "median_of_round_medians_ms": medians,
        "ratio_tvm_tuned_over_ort_full": ratio("tvm_full", "ort_full"),
        "ratio_tvm_tuned_over_ort_pruned": ratio("tvm_pruned", "ort_pruned"),
        "per_round_ratio_full": round_ratios("tvm_full", "ort_full"),
        "per_round_ratio_pruned": round_ratios("tvm_pruned", "ort_pruned"),
        "speedup_pruned_over_full_ort": ratio("ort_full", "ort_pruned"),
        "speedup_pruned_over_full_tvm": ratio("tvm_full", "tvm_pruned"),
    }
    result["settings"] = {"ort-cpu": ort.settings(), "tvm-llvm": tuned.settings()}
    result["loadavg_end"] = loadavg()
    result["total_wall_seconds"] = round(time.perf_counter() - _T0, 1)
    r_full = result["side_by_side"]["ratio_tvm_tuned_over_ort_full"]
    if r_full is None:
        verdict = "tuned TVM could not be measured on the full network (see errors)"
        result["tvm_no_slower_than_ort"] = None
    else:
        result["tvm_no_slower_than_ort"] = r_full <= 1.0
        verdict = (f"At {args.trials} trials/task, tuned TVM is "
                   + ("no slower than" if r_full <= 1.0 else f"{r_full:.2f}x slower than")
                   + f" onnxruntime on {args.model} ({args.threads} thread"
                   + ("s" if args.threads > 1 else "") + ")"
                   + ("." if r_full <= 1.0 else "; at this trial budget onnxruntime stays the faster target."))
    result["conclusion"] = verdict
    (out / "tvm_vs_ort.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "tvm_vs_ort.md").write_text(render_md(result, args) + "\n" + kept_notes(out / "tvm_vs_ort.md"))
    log(verdict)


def render_md(res: dict[str, Any], args: argparse.Namespace) -> str:
    """The Markdown summary of a result (``args`` only needs ``trials``)."""
    med = res["side_by_side"]["median_of_round_medians_ms"]
    sbs = res["side_by_side"]
    tf, tp = res["tvm_tuned_full"], res["tvm_tuned_pruned"]
    mi = res["model"]

    def ms(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    def tune_cell(t: dict[str, Any]) -> str:
        rep = t["tuning"] or {}
        s = (f"{rep.get('newly_tuned', '?')} tuned, {rep.get('already_in_database', '?')} already in DB, "
             f"{rep.get('still_untuned', '?')} untuned of {rep.get('workloads_total', '?')}; "
             f"{rep.get('tuning_seconds', 0):.0f} s tuning ({t['compile_wall_seconds']:.0f} s with compile)")
        return s + (f"; **error**: {t['error']}" if t["error"] else "")

    v = res["versions"]
    lines = [
        f"# Tuned TVM vs onnxruntime: {mi['name']} {'x'.join(map(str, mi['input_shape']))}, "
        f"{res['threads']} thread{'s' if res['threads'] > 1 else ''}",
        "",
        f"{args.trials} MetaSchedule trials per task, measured {res.get('trials_per_batch', 64)} at a time, "
        f"into a fresh database, one task after another (no "
        f"candidate timed while another compiles); timing warm-up {res['timing']['warmup']}, "
        f"repeat {res['timing']['repeat']}, {res['rounds']} alternating rounds (median of round medians). "
        f"Pruned variant: `prune_onnx(ratio={mi['prune_ratio']})`, MACs {mi['macs_full'] / 1e9:.3f} G -> "
        f"{mi['macs_pruned'] / 1e9:.3f} G, tuned against the warm database.",
        "",
        "| network | ort-cpu ms | tvm-llvm tuned ms | TVM / ORT | TVM tuning |",
        "|---|---|---|---|---|",
        f"| {mi['name']} | {ms(med['ort_full'])} | {ms(med['tvm_full'])} | "
        f"{ms(sbs['ratio_tvm_tuned_over_ort_full'])} | {tune_cell(tf)} |",
        f"| {mi['name']} pruned {mi['prune_ratio']} | {ms(med['ort_pruned'])} | {ms(med['tvm_pruned'])} | "
        f"{ms(sbs['ratio_tvm_tuned_over_ort_pruned'])} | {tune_cell(tp)} |",
        "",
    ]
    if "tvm_untuned" in res:
        u = res["tvm_untuned"]
        lines += [f"TVM untuned ({mi['name']}, {u['untuned_workloads']} workloads without a schedule, "
                  f"warm-up {u['timing']['warmup']}, repeat {u['timing']['repeat']}): "
                  f"{u['measurement']['median_ms']:.0f} ms. {UNTUNED_NOTE}.", ""]
    ov = res["task_overlap"]
    lines += [f"Workload reuse: the pruned variant has {ov['tasks_pruned']} tuning tasks, "
              f"{ov['pruned_tasks_shared_with_full']} of them shared with the full network's {ov['tasks_full']}"
              + (f" (ratio {mi['prune_ratio']} changed every tuned shape)" if not ov["pruned_tasks_shared_with_full"]
                 else "")
              + f"; the warm database covered {(tp['tuning'] or {}).get('already_in_database', '?')}, "
              f"{(tp['tuning'] or {}).get('newly_tuned', '?')} were tuned for it.", ""]
    checks = [f"{name} {t['vs_ort_output']['max_rel_error']:.1e}" for name, t in (("full", tf), ("pruned", tp))
              if t.get("vs_ort_output")]
    if checks:
        lines += [f"Tuned TVM output vs onnxruntime, max relative error: {', '.join(checks)}.", ""]
    lines += [f"Per-round TVM/ORT ratios: full {', '.join(f'{x:.2f}' for x in sbs['per_round_ratio_full'])}; "
              f"pruned {', '.join(f'{x:.2f}' for x in sbs['per_round_ratio_pruned'])}. "
              f"Load average at start {res['loadavg_start']}, end {res['loadavg_end']} "
              f"({os.cpu_count()}-core machine). Total wall time {res['total_wall_seconds'] / 60:.1f} min.",
              "",
              f"Versions: TVM {v['apache-tvm']} (tvm-ffi {v['apache-tvm-ffi']}), onnxruntime {v['onnxruntime']}, "
              f"torch {v['torch']}, CPU {v.get('cpu')}, LLVM target "
              f"`{json.dumps(res['settings']['tvm-llvm']['llvm_target'], sort_keys=True)}`.",
              "",
              f"**Conclusion:** {res['conclusion']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
