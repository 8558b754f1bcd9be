"""Does the searching process time a pruned network as a fresh process does? Why confirmations
and the final check run in a process of their own.

    python benchmarks/process_gap.py --cases efficientnet_b0:60%:opti-cut,resnet50:80%:hilp --checks 4 --block-runs 3,10

Per case, the model (random weights) is pruned to the budget in this process, with the final
check in this process too (``final_check_process="this"``) and no plan cache, so the process
has run the whole search's sessions. Then the same pruned network gets ``--checks`` final
checks in this process and as many in fresh processes, alternating (this, fresh, this, ...), so
drift touches both alike, once per length of the timed blocks in ``--block-runs`` (the tool's
final check times blocks of a quarter of ``--repeat`` runs, 3 at the budget benchmark's 15; the
benchmark's judge times blocks of 10). Each check is the tool's: 3 session pairs, median ratio.
Reported: each setting's median ratio, and per block length how many of the alternating pairs
had the fresh check slower. Writes ``results/process_gap.{json,md}``.
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


def run_case(model: str, budget: str, search: str, checks: int, block_runs: list[int], tmp: Path) -> dict:
    """One search in this process, then ``checks`` alternating final checks here and in fresh processes."""
    src = tmp / f"{model}.onnx"
    export_onnx(build_model(model), input_shape_for(model), src)
    t0 = time.perf_counter()
    res = prune_to_budget(src, budget, search=search, repeat=15, cache_dir=tmp / f"cache_{model}_{search}",
                          final_check_process="this")
    search_s = time.perf_counter() - t0
    original = load_onnx_model(src, None).original
    settings = [(where, runs) for runs in block_runs for where in ("this", "fresh")]
    ratios: dict[str, list[float]] = {f"{where} {runs}": [] for where, runs in settings}
    for i in range(checks):
        for where, runs in settings:
            backend = create_backend("ort-cpu", timing=TimingConfig(warmup=3, repeat=runs, threads=1), use_cache=False)
            check = final_check(backend, original, res["model"], process=where)
            assert check.process == where
            ratios[f"{where} {runs}"].append(check.final.median_ms / check.base.median_ms)
            print(f"{model} {budget} {search} check {i + 1}/{checks} {where}, blocks of {runs}: "
                  f"{ratios[f'{where} {runs}'][-1]:.4f}", flush=True)
    medians = {k: statistics.median(v) for k, v in ratios.items()}
    return {"model": model, "budget": budget, "search": search, "search_seconds": round(search_s, 1),
            "confirmations_in": sorted({c.get("process", "this") for c in res["report"]["confirmations"]}),
            "ratios": ratios, "medians": medians, "checks": checks, "block_runs": block_runs,
            "fresh_over_this_pct": {runs: 100 * (medians[f"fresh {runs}"] / medians[f"this {runs}"] - 1)
                                    for runs in block_runs},
            "pairs_fresh_slower": {runs: sum(f > t for t, f in zip(ratios[f"this {runs}"], ratios[f"fresh {runs}"]))
                                   for runs in block_runs}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", default="efficientnet_b0:60%:opti-cut,resnet50:80%:hilp",
                    help="model:budget:search, comma-separated")
    ap.add_argument("--checks", type=int, default=4, help="final checks on each side, alternating")
    ap.add_argument("--block-runs", default="3,10", help="timed runs per block, comma-separated")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            model, budget, search = case.split(":")
            rows.append({**run_case(model, budget, search, args.checks,
                                    [int(n) for n in args.block_runs.split(",")], Path(tmp)), "commit": code_commit()})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "process_gap.json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    md = ["# The searching process against fresh processes (ort-cpu, 1 thread)", "",
          "Per case: one search in the benchmark's process (its confirmations where the code puts them; "
          "final check there too), then the same pruned network's final check (3 session pairs, median "
          "ratio) alternately in that process and in a fresh one, with timed blocks of each length. "
          "Cells: median pruned/original ratio (lowest-highest).", "",
          "| model | budget | search | checks each | blocks of | searching process | fresh process "
          "| fresh / searching | pairs with the fresh check slower | search s | commit |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for runs in r["block_runs"]:
            md.append(f"| {r['model']} | {r['budget']} | {r['search']} | {r['checks']} | {runs} | "
                      f"{median_range(r['ratios'][f'this {runs}'])} | {median_range(r['ratios'][f'fresh {runs}'])} | "
                      f"{r['fresh_over_this_pct'][runs]:+.2f}% | "
                      f"{r['pairs_fresh_slower'][runs]}/{r['checks']} | {r['search_seconds']} | {r['commit']} |")
    (out / "process_gap.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
