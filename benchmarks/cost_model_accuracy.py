"""How well each cost model predicts measured latency of randomly pruned variants.

Per model: ``--variants`` random per-group keep ratios in [0.3, 1.0], each exact by the
oracle, measured whole on the target; the predictor is fitted on the first half and
scored on the held-out second half (all models are scored on the same held-out half).

    python benchmarks/cost_model_accuracy.py --models resnet18,resnet50 --variants 30
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from hwprune_fx.analysis import analyze_dependencies
from hwprune_fx.cost_models import LayerChannels, create_cost_model
from hwprune_fx.cost_models.lut import LutCostModel
from hwprune_fx.cost_models.measured import MeasuredCostModel
from hwprune_fx.cost_models.predictor import PredictorCostModel
from hwprune_fx.oracle import onnx_oracle
from hwprune_fx.pipeline import load_onnx_model
from hwprune_fx.plan import PruningPlan
from hwprune_fx.profiling.layers import find_layers
from hwprune_fx.targets import TimingConfig, create_backend
from hwprune_fx.zoo import build_model, export_onnx, input_shape_for


def random_keep(analysis, rng: np.random.Generator) -> np.ndarray:
    keep = np.ones(analysis.num_units, bool)
    for g in analysis.prunable_groups():
        ratio = rng.uniform(0.3, 1.0)
        drop = min(g.size - 1, int(round(g.size * (1 - ratio))))
        if drop > 0:
            keep[rng.choice(g.units, drop, replace=False)] = False
    return keep


def scores(pred: np.ndarray, truth: np.ndarray) -> dict:
    err = np.abs(pred - truth) / truth
    return {"mape_pct": round(100 * float(err.mean()), 2), "worst_pct": round(100 * float(err.max()), 2),
            "spearman": round(float(spearmanr(pred, truth).statistic), 4)}


def run_model(name: str, variants: int, backend, seed: int) -> dict:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        export_onnx(build_model(name), input_shape_for(name), path)
        loaded = load_onnx_model(path)
    analysis = analyze_dependencies(loaded.channel_graph)
    channels = LayerChannels.build(analysis, find_layers(loaded.graph))
    t1 = time.perf_counter()
    lut = LutCostModel.profile(channels, backend)
    profile_s = time.perf_counter() - t1
    flops = create_cost_model("flops", channels=channels)
    measured = MeasuredCostModel(loaded.original, analysis, backend)
    rng = np.random.default_rng(seed)
    configs, truth, max_err = [], [], 0.0
    for _ in range(variants):
        keep = random_keep(analysis, rng)
        model = measured.build(keep)
        res = onnx_oracle(loaded.original, model, PruningPlan(analysis, np.flatnonzero(~keep)).removed_channels)
        if not res.exact:
            raise AssertionError(f"{name}: variant not exact ({res.max_rel_error})")
        max_err = max(max_err, res.max_rel_error)
        configs.append(keep)
        truth.append(backend.measure(model).median_ms)
    truth_arr = np.array(truth)
    half = variants // 2
    fit_c, test_c, test_t = configs[:half], configs[half:], truth_arr[half:]
    predictor = PredictorCostModel(lut, analysis).fit(fit_c, truth_arr[:half])
    # flops predicts MACs, not ms: scale it by a least-squares factor fitted on the same half
    f_fit = np.array([flops.predict(k) for k in fit_c])
    scale = float(f_fit @ truth_arr[:half] / (f_fit @ f_fit))
    row = {"model": name, "variants": variants, "held_out": len(test_c), "units": analysis.num_units,
           "layers": len(channels.layers), "baseline_ms": backend.measure(loaded.original).median_ms,
           "oracle_max_rel_error": max_err, "lut_profile_seconds": round(profile_s, 1),
           "predictor": scores(np.array([predictor.predict(k) for k in test_c]), test_t),
           "lut": scores(np.array([lut.predict(k) for k in test_c]), test_t),
           "flops": scores(scale * np.array([flops.predict(k) for k in test_c]), test_t),
           "seconds": round(time.perf_counter() - t0, 1)}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="resnet18,resnet50,mobilenet_v2,vgg16_bn,efficientnet_b0")
    ap.add_argument("--variants", type=int, default=30)
    ap.add_argument("--target", default="ort-cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    backend = create_backend(args.target, timing=TimingConfig(warmup=3, repeat=args.repeat, threads=args.threads),
                             use_cache=False)
    rows = []
    for name in args.models.split(","):
        rows.append(run_model(name, args.variants, backend, args.seed))
        r = rows[-1]
        print(f"{name}: predictor MAPE {r['predictor']['mape_pct']}% rho {r['predictor']['spearman']}; "
              f"lut {r['lut']['mape_pct']}%; flops {r['flops']['mape_pct']}% ({r['seconds']} s)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import os

    meta = {"target": args.target, "settings": backend.settings(), "variants": args.variants,
            "load_average_at_end": list(os.getloadavg())}
    (out / "cost_model_accuracy.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    md = [f"# Cost-model accuracy on {args.target} ({args.threads} thread), held-out variants", "",
          f"Load average at the end: {', '.join(f'{x:.1f}' for x in meta['load_average_at_end'])} on "
          f"{os.cpu_count()} cores (timing noise grows with it).", "",
          "| model | baseline ms | predictor MAPE | predictor worst | predictor ρ | LUT MAPE | LUT ρ | FLOPs MAPE | FLOPs ρ |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p, lu, f = r["predictor"], r["lut"], r["flops"]
        md.append(f"| {r['model']} | {r['baseline_ms']:.2f} | {p['mape_pct']}% | {p['worst_pct']}% | {p['spearman']} | "
                  f"{lu['mape_pct']}% | {lu['spearman']} | {f['mape_pct']}% | {f['spearman']} |")
    (out / "cost_model_accuracy.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
