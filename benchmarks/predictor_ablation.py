"""What the depthwise treatment of the cost models buys, on variants already measured.

Two ablations on the measured latencies that ``cost_model_accuracy.py`` committed, scored on
the same held-out variants:

- the predictor with and without its last feature (``depthwise_off_4_Melems``);
- the LUT (alone, and under the predictor) with depthwise layers swept on and off a multiple of
  4 and looked up within their class, against one curve through mixed points (the LUT before).

No variant is timed again: the variants are redrawn from the seed that run used
(``random_keep`` with the same generator), only the LUTs are profiled anew.

    python benchmarks/predictor_ablation.py --models mobilenet_v2,efficientnet_b0 --seed 1
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from cost_model_accuracy import load_zoo_model, random_keep, scores
from provenance import code_commit

from hwprune_fx.cost_models.lut import LutCostModel
from hwprune_fx.cost_models.predictor import PredictorCostModel
from hwprune_fx.targets import TimingConfig, create_backend

RESULTS = Path(__file__).parent / "results"


def run_model(row: dict, seed: int, threads: int) -> dict:
    name = row["model"]
    _, analysis, channels = load_zoo_model(name)
    backend = create_backend("ort-cpu", timing=TimingConfig(warmup=3, repeat=5, threads=threads), use_cache=False)
    lut = LutCostModel.profile(channels, backend)
    mixed = LutCostModel.profile(channels, backend, depthwise_classes=False)
    truth, fit = np.array(row["truth_ms"]), row["fitted_on"]
    rng = np.random.default_rng(seed)
    keeps = [random_keep(analysis, rng) for _ in truth]
    result = {"model": name, "seed": seed, "fitted_on": fit, "held_out": len(truth) - fit,
              "truth_from_commit": row.get("commit"), "commit": code_commit()}
    for label, on in (("with_feature", True), ("without_feature", False)):
        predictor = PredictorCostModel(lut, analysis, unaligned_depthwise=on).fit(keeps[:fit], truth[:fit])
        result[label] = scores(np.array([predictor.predict(k) for k in keeps[fit:]]), truth[fit:])
        result[f"{label}_features"] = predictor.feature_names()
    for label, table in (("lut_classes", lut), ("lut_mixed", mixed)):
        result[label] = scores(np.array([table.predict(k) for k in keeps[fit:]]), truth[fit:])
        predictor = PredictorCostModel(table, analysis).fit(keeps[:fit], truth[:fit])
        result[f"predictor_on_{label}"] = scores(np.array([predictor.predict(k) for k in keeps[fit:]]), truth[fit:])
    if result["with_feature_features"] == result["without_feature_features"]:
        raise SystemExit(f"{name}: no depthwise layer, nothing to ablate")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mobilenet_v2,efficientnet_b0")
    ap.add_argument("--seed", type=int, default=1, help="the --seed of the cost_model_accuracy run that timed them")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--truth", default=str(RESULTS / "cost_model_accuracy.json"))
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    measured = {r["model"]: r for r in json.loads(Path(args.truth).read_text())["rows"]}
    rows = [run_model(measured[m], measured[m].get("seed", args.seed), args.threads) for m in args.models.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "predictor_ablation.json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    md = ["# Depthwise treatment of the cost models, refitted on measured variants (held out)", "",
          "## The predictor with and without the unaligned-depthwise feature", "",
          "Same measured variants (from `cost_model_accuracy.json`), same fit, the last feature column dropped. "
          "The LUT is profiled anew, so the 'with' column can differ slightly from that table.", "",
          "| model | seed | fitted / held out | MAPE with | ρ with | MAPE without | ρ without | truth timed at |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        w, wo = r["with_feature"], r["without_feature"]
        md.append(f"| {r['model']} | {r['seed']} | {r['fitted_on']} / {r['held_out']} | {w['mape_pct']}% | "
                  f"{w['spearman']} | {wo['mape_pct']}% | {wo['spearman']} | {r['truth_from_commit']} |")
    md += ["", "## Depthwise layers in the LUT: two classes of widths vs one curve through mixed points", "",
           "Both LUTs profiled in this run; `mixed` is the LUT before depthwise layers were swept on and "
           "off a multiple of 4. The predictor (all features) is refitted on each.", "",
           "| model | seed | LUT MAPE: classes | ρ | LUT MAPE: mixed | ρ | predictor MAPE on classes | ρ "
           "| predictor MAPE on mixed | ρ |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r[k] for k in ("lut_classes", "lut_mixed", "predictor_on_lut_classes", "predictor_on_lut_mixed")]
        md.append(f"| {r['model']} | {r['seed']} | " + " | ".join(f"{c['mape_pct']}% | {c['spearman']}" for c in cells)
                  + " |")
    (out / "predictor_ablation.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
