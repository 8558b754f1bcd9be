"""Does the searching process time a pruned network as a fresh process does? Why confirmations
and the final check run in a process of their own.

    python benchmarks/process_gap.py --cases efficientnet_b0:60%:opti-cut,resnet50:80%:hilp --checks 4

Per case, the model (random weights) is pruned to the budget in this process, with the final
check in this process too (``final_check_process="this"``) and no plan cache, so the process
has run the whole search's sessions. Then the same pruned network gets ``--checks`` final
checks in this process and as many in fresh processes, alternating (this, fresh, this, ...), so
drift touches both alike. Each check is the tool's: 3 session pairs, median ratio. Reported: each
side's median ratio, and how many of the alternating pairs had the fresh check slower.
Writes ``results/process_gap.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from provenance import code_commit

from hwprune_fx.pipeline import load_onnx_model
from hwprune_fx.prune_budget import prune_to_budget
from hwprune_fx.search.final_check import final_check
from hwprune_fx.targets import TimingConfig, create_backend
from hwprune_fx.zoo import build_model, export_onnx, input_shape_for


def run_case(model: str, budget: str, search: str, checks: int, tmp: Path) -> dict:
    """One search in this process, then ``checks`` alternating final checks here and in fresh processes."""
    src = tmp / f"{model}.onnx"
    export_onnx(build_model(model), input_shape_for(model), src)
    t0 = time.perf_counter()
    res = prune_to_budget(src, budget, search=search, repeat=15, cache_dir=tmp / f"cache_{model}_{search}",
                          final_check_process="this")
    search_s = time.perf_counter() - t0
    original = load_onnx_model(src, None).original
    backend = create_backend("ort-cpu", timing=TimingConfig(warmup=3, repeat=3, threads=1), use_cache=False)
    ratios: dict[str, list[float]] = {"this": [], "fresh": []}
    for i in range(checks):
        for where in ("this", "fresh"):
            check = final_check(backend, original, res["model"], process=where)
            assert check.process == where
            ratios[where].append(check.final.median_ms / check.base.median_ms)
            print(f"{model} {budget} {search} check {i + 1}/{checks} {where}: {ratios[where][-1]:.4f}", flush=True)
    this, fresh = (statistics.median(ratios[k]) for k in ("this", "fresh"))
    return {"model": model, "budget": budget, "search": search, "search_seconds": round(search_s, 1),
            "confirmations_in": sorted({c.get("process", "this") for c in res["report"]["confirmations"]}),
            "ratios": ratios, "median_this": this, "median_fresh": fresh,
            "fresh_over_this_pct": 100 * (fresh / this - 1),
            "pairs_fresh_slower": sum(f > t for t, f in zip(ratios["this"], ratios["fresh"])), "checks": checks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", default="efficientnet_b0:60%:opti-cut,resnet50:80%:hilp",
                    help="model:budget:search, comma-separated")
    ap.add_argument("--checks", type=int, default=4, help="final checks on each side, alternating")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            model, budget, search = case.split(":")
            rows.append({**run_case(model, budget, search, args.checks, Path(tmp)), "commit": code_commit()})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "process_gap.json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    md = ["# The searching process against fresh processes (ort-cpu, 1 thread)", "",
          "Per case: one search in the benchmark's process (its confirmations where the code puts them; "
          "final check there too), then the same pruned network's final check (3 session pairs, median "
          "ratio) alternately in that process and in a fresh one.", "",
          "| model | budget | search | checks each | ratio, searching process (median) | ratio, fresh process (median) "
          "| fresh / searching | pairs with the fresh check slower | search s | commit |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['model']} | {r['budget']} | {r['search']} | {r['checks']} | {r['median_this']:.4f} "
                  f"({min(r['ratios']['this']):.4f}-{max(r['ratios']['this']):.4f}) | {r['median_fresh']:.4f} "
                  f"({min(r['ratios']['fresh']):.4f}-{max(r['ratios']['fresh']):.4f}) | "
                  f"{r['fresh_over_this_pct']:+.2f}% | {r['pairs_fresh_slower']}/{r['checks']} | "
                  f"{r['search_seconds']} | {r['commit']} |")
    (out / "process_gap.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
