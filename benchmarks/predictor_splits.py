"""How far one held-out score of the predictor is from what another draw of variants would give.

``cost_model_accuracy.py`` scores the predictor on one set of held-out variants (30). A rank
correlation over 30 points moves by a few hundredths when a handful of near-equal variants
swap places, so a goal such as ρ >= 0.95 can be met or missed by the draw. This benchmark
asks how much, on the latencies that run committed (no variant is timed again):

- **splits**: ``--splits`` random fit/held-out splits of all the measured variants, in the
  same proportion as the run (e.g. 90 / 30); the predictor fitted on each fit part and
  scored on its held-out part. The distribution of MAPE and ρ, and the share of splits
  meeting the goal;
- **k-fold**: every variant predicted once by a predictor fitted on the others (``--folds``
  folds), scored over all of them: one estimate from every measured variant;
- **LUT profiles**: the run's own split, refitted on ``--lut-profiles`` LUTs profiled one
  after another. The LUT's sweeps are measurements, and the predictor's features are read
  from them, so its score moves with the profile too. Splits and k-fold use the first.

The predictor, its features and its fit are the library's own; nothing is tuned here. The
variants are redrawn from the seed of the run (``random_keep`` with the same generator); the
LUT is profiled anew, so the run's own split can score slightly differently from its table.

    python benchmarks/predictor_splits.py --models mobilenet_v2,efficientnet_b0,vgg16_bn
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from cost_model_accuracy import fitted_scores, load_zoo_model, random_keep, scores
from provenance import code_commit

from hwprune_fx.cost_models.lut import LutCostModel
from hwprune_fx.cost_models.predictor import PredictorCostModel
from hwprune_fx.targets import TimingConfig, create_backend

RESULTS = Path(__file__).parent / "results"
RHO_GOAL = 0.95


def run_model(row: dict, splits: int, folds: int, threads: int, lut_profiles: int) -> dict:
    name, seed = row["model"], row["seed"]
    _, analysis, channels = load_zoo_model(name)
    backend = create_backend("ort-cpu", timing=TimingConfig(warmup=3, repeat=5, threads=threads), use_cache=False)
    truth, fit = np.array(row["truth_ms"]), row["fitted_on"]
    rng = np.random.default_rng(seed)
    keeps = [random_keep(analysis, rng) for _ in truth]
    n = len(truth)
    # the LUT's sweeps are measurements too: profile it more than once, score the run's split on each
    profiled = []
    for _ in range(lut_profiles):
        predictor = PredictorCostModel(LutCostModel.profile(channels, backend), analysis)
        features = np.stack([predictor.features(k) for k in keeps])
        profiled.append((features, fitted_scores(features, truth, np.arange(fit), np.arange(fit, n))[0]))
    features, run_split = profiled[0]
    draw = np.random.default_rng(12345)
    per_split = []
    for _ in range(splits):
        order = draw.permutation(n)
        per_split.append(fitted_scores(features, truth, order[:fit], order[fit:])[0])
    order, pred = draw.permutation(n), np.zeros(n)
    for f in range(folds):
        test = order[f::folds]
        pred[test] = fitted_scores(features, truth, np.setdiff1d(order, test), test)[1]
    rho = np.array([s["spearman"] for s in per_split])
    mape = np.array([s["mape_pct"] for s in per_split])
    return {"model": name, "seed": seed, "variants": n, "fitted_on": fit, "held_out": n - fit,
            "truth_from_commit": row.get("commit"), "commit": code_commit(),
            "run_split_refitted": run_split, "table_predictor": row["predictor"],
            "run_split_by_lut_profile": [score for _, score in profiled],
            "splits": splits, "split_rho": {"median": float(np.median(rho)), "p5": float(np.percentile(rho, 5)),
                                            "p95": float(np.percentile(rho, 95)),
                                            "share_meeting_goal": float(np.mean(rho >= RHO_GOAL))},
            "split_mape_pct": {"median": float(np.median(mape)), "p5": float(np.percentile(mape, 5)),
                               "p95": float(np.percentile(mape, 95)), "share_within_5": float(np.mean(mape <= 5.0))},
            "folds": folds, "kfold": scores(pred, truth)}


def render(rows: list[dict]) -> str:
    md = ["# The predictor's held-out score across draws of the held-out variants", "",
          "Latencies measured by `cost_model_accuracy.py` (not timed again). `splits`: random fit / held-out "
          "splits of all measured variants in the run's proportion, the predictor fitted on each fit part and "
          "scored on its held-out part (5th-95th percentile, and the share of splits meeting the goal: "
          f"ρ >= {RHO_GOAL}, MAPE <= 5%). `k-fold`: every variant predicted by a predictor fitted on the others. "
          "`run's split`: the table's own split refitted here on a LUT profiled anew.", "",
          "| model | variants (fit / held out) | table: MAPE, ρ | run's split, refitted on each LUT profile: MAPE; ρ "
          "| splits: ρ median (p5-p95) | splits with ρ >= 0.95 | splits: MAPE median (p5-p95) | k-fold: MAPE, ρ "
          "| truth timed at |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t, rs, sr, sm, kf = (r["table_predictor"], r["run_split_refitted"], r["split_rho"], r["split_mape_pct"],
                             r["kfold"])
        per_lut = r.get("run_split_by_lut_profile") or [rs]
        lut_mape = ", ".join(f"{x['mape_pct']}%" for x in per_lut)
        lut_rho = ", ".join(str(x["spearman"]) for x in per_lut)
        md.append(f"| {r['model']} | {r['variants']} ({r['fitted_on']} / {r['held_out']}) | "
                  f"{t['mape_pct']}%, {t['spearman']} | {lut_mape}; {lut_rho} | "
                  f"{sr['median']:.3f} ({sr['p5']:.3f}-{sr['p95']:.3f}) | {100 * sr['share_meeting_goal']:.0f}% | "
                  f"{sm['median']:.2f}% ({sm['p5']:.2f}-{sm['p95']:.2f}) | {kf['mape_pct']}%, {kf['spearman']} | "
                  f"{r['truth_from_commit']} |")
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mobilenet_v2,efficientnet_b0,vgg16_bn")
    ap.add_argument("--splits", type=int, default=500)
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--lut-profiles", type=int, default=3, help="LUTs profiled, one after another")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--truth", default=str(RESULTS / "cost_model_accuracy.json"))
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    measured = {r["model"]: r for r in json.loads(Path(args.truth).read_text())["rows"]}
    missing = [m for m in args.models.split(",") if "seed" not in measured.get(m, {})]
    if missing:
        raise SystemExit(f"no measured variants with a recorded seed for: {', '.join(missing)}")
    rows = [run_model(measured[m], args.splits, args.folds, args.threads, args.lut_profiles) for m in args.models.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "predictor_splits.json").write_text(json.dumps({"rho_goal": RHO_GOAL, "rows": rows}, indent=2) + "\n")
    (out / "predictor_splits.md").write_text(render(rows) + "\n")
    print(render(rows))


if __name__ == "__main__":
    main()
