"""How well each cost model predicts measured latency of randomly pruned variants.

Per model: ``--fit`` + ``--variants`` random per-group keep ratios in [0.3, 1.0], each exact
by the oracle, measured whole on the target. The predictor is fitted on the first ``--fit``
variants and every cost model is scored on the other ``--variants`` (held out). The predictor
is also fitted on the first 10, 20, 30, 60 of the fit variants (those under ``--fit``) and
scored on the same held-out ones: a learning curve that says whether timing more variants
would buy accuracy.

Each variant is timed beside the original, a block of the original before every block of the
variant, and its latency taken as (variant / original, median) x the baseline: machine drift
over the run (minutes to an hour) would otherwise show up as model error. The variants are
timed in pools (``pooled_ratios``): every round goes once through all of a pool's variants,
so one variant's rounds are spread over minutes rather than taken within a second, where a
spell of a slow machine could catch all of them.

    python benchmarks/cost_model_accuracy.py --models resnet18,resnet50 --fit 30 --variants 30
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from notes import kept_notes
from provenance import code_commit, cpu_label
from tqdm import tqdm

from hwprune_fx.analysis import analyze_dependencies
from hwprune_fx.cost_models import LayerChannels, create_cost_model
from hwprune_fx.cost_models.lut import LutCostModel
from hwprune_fx.cost_models.measured import MeasuredCostModel
from hwprune_fx.cost_models.predictor import PredictorCostModel, fit_coefficients
from hwprune_fx.oracle import onnx_oracle
from hwprune_fx.pipeline import load_onnx_model
from hwprune_fx.plan import PruningPlan
from hwprune_fx.profiling.layers import find_layers
from hwprune_fx.targets import TimingConfig, create_backend
from hwprune_fx.targets.side_by_side import BLOCK_SECONDS, pooled_ratios
from hwprune_fx.zoo import build_model, export_onnx, input_shape_for


#: rows written before the CPU was recorded were all timed on the machine of sessions 1-14
EARLIER_CPU = "AMD EPYC, AVX2"


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


def fit_sizes(fit: int) -> list[int]:
    """Fit-set sizes of the learning curve: nested prefixes of the fit variants, up to all."""
    return sorted({n for n in (10, 20, 30, 60) if n < fit} | {fit})


def fitted_scores(features: np.ndarray, truth: np.ndarray, fit_idx: np.ndarray,
                  test_idx: np.ndarray) -> tuple[dict, np.ndarray]:
    """The predictor's fit on the variants ``fit_idx`` (rows of its ``features``), predicting
    ``test_idx``: (scores, predictions)."""
    pred = features[test_idx] @ fit_coefficients(features[fit_idx], truth[fit_idx])
    return scores(pred, truth[test_idx]), pred


def learning_curve(predictor: PredictorCostModel, configs: list, truth: np.ndarray, fit: int) -> dict[str, dict]:
    """The predictor fitted on the first n variants, for each n in :func:`fit_sizes`, scored on
    the same held-out variants (all after the first ``fit``): whether measuring more variants
    would buy accuracy."""
    features = np.stack([predictor.features(k) for k in configs])
    held_out = np.arange(fit, len(configs))
    return {str(n): fitted_scores(features, truth, np.arange(n), held_out)[0] for n in fit_sizes(fit)}


def pooled_latencies(backend, original, build, keeps: list, rounds: int,
                     passes: int) -> tuple[list[float], list[float]]:
    """(per variant, its median ratio to the original; the original's block medians), in pools
    that fit memory.

    ``pooled_ratios`` keeps a pool's sessions all alive, so a pool holds about 2 GiB of
    models (VGG16-BN: 3 variants; MobileNetV2: all of them); ``build`` makes a variant.
    """
    size = max(1, (2 << 30) // max(1, original.ByteSize()))
    ratios, reference = [], []
    for start in tqdm(range(0, len(keeps), size), desc="timing pools", file=sys.stderr, leave=False):
        r, ref = pooled_ratios(backend, original, [build(k) for k in keeps[start:start + size]], rounds, passes)
        ratios += [float(np.median(x)) for x in r]
        reference += ref
    return ratios, reference


def load_zoo_model(name: str):
    """A zoo model exported to ONNX and loaded, its dependency analysis and its layers' channels."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        export_onnx(build_model(name), input_shape_for(name), path)
        loaded = load_onnx_model(path)
    analysis = analyze_dependencies(loaded.channel_graph)
    return loaded, analysis, LayerChannels.build(analysis, find_layers(loaded.graph))


def run_model(name: str, fit: int, variants: int, backend, seed: int, rounds: int, recheck: int,
              sessions: int = 1, min_block_s: float = 0.0, lut_repeat: int = 20) -> dict:
    """The LUT is profiled as ``prune`` profiles it (``lut_repeat`` runs a point, prune's
    default ``--repeat``); the variants are timed in blocks of at least ``min_block_s``: a
    block of a few runs of a few-millisecond network reads the caches the original's block
    left and its ratio high (``results/block_length.md``), and the tool's own checks time
    blocks of ``BLOCK_SECONDS``."""
    t0 = time.perf_counter()
    loaded, analysis, channels = load_zoo_model(name)
    t1 = time.perf_counter()
    lut = LutCostModel.profile(channels, backend.with_timing(replace(backend.timing, warmup=5, repeat=lut_repeat)))
    timer = backend.with_timing(replace(backend.timing, min_seconds=min_block_s))
    profile_s = time.perf_counter() - t1
    flops = create_cost_model("flops", channels=channels)
    measured = MeasuredCostModel(loaded.original, analysis, backend)
    rng = np.random.default_rng(seed)
    configs = [random_keep(analysis, rng) for _ in range(fit + variants)]
    max_err = 0.0

    def checked(keep: np.ndarray):
        """The variant, built once for its pool and checked by the oracle before it is timed."""
        nonlocal max_err
        model = measured.build(keep)
        res = onnx_oracle(loaded.original, model, PruningPlan(analysis, np.flatnonzero(~keep)).removed_channels)
        if not res.exact:
            raise AssertionError(f"{name}: variant not exact ({res.max_rel_error})")
        max_err = max(max_err, res.max_rel_error)
        return model
    ratios, originals = pooled_latencies(timer, loaded.original, checked, configs, rounds, sessions)
    # the measurement's own repeatability, the floor under any model's error: the first
    # ``recheck`` held-out variants timed a second time, the same way, after all the others
    again = pooled_latencies(timer, loaded.original, measured.build, configs[fit:fit + recheck], rounds,
                             sessions)[0] if recheck else []
    # the original's latency: the median of all its rounds, i.e. over the whole run
    baseline_ms = float(np.median(originals))
    truth_arr = np.array(ratios) * baseline_ms
    half = fit
    fit_c, test_c, test_t = configs[:half], configs[half:], truth_arr[half:]
    predictor = PredictorCostModel(lut, analysis).fit(fit_c, truth_arr[:half])
    # flops predicts MACs, not ms: scale it by a least-squares factor fitted on the same half
    f_fit = np.array([flops.predict(k) for k in fit_c])
    scale = float(f_fit @ truth_arr[:half] / (f_fit @ f_fit))
    row = {"model": name, "fitted_on": fit, "held_out": len(test_c), "units": analysis.num_units,
           "layers": len(channels.layers), "baseline_ms": baseline_ms, "rounds": rounds, "sessions": sessions,
           "protocol": "pooled",
           "seed": seed, "commit": code_commit(), "cpu": cpu_label(), "min_block_ms": round(1e3 * min_block_s),
           "lut_repeat": lut_repeat,
           "repeat": backend.timing.repeat, "predictor_coef": predictor.coef.tolist(),
           "oracle_max_rel_error": max_err, "lut_profile_seconds": round(profile_s, 1),
           "predictor": scores(np.array([predictor.predict(k) for k in test_c]), test_t),
           "predictor_by_fit_size": learning_curve(predictor, configs, truth_arr, fit),
           "lut": scores(np.array([lut.predict(k) for k in test_c]), test_t),
           "flops": scores(scale * np.array([flops.predict(k) for k in test_c]), test_t),
           "repeatability": scores(np.array(again) * baseline_ms, truth_arr[fit:fit + len(again)]) if again else None,
           "repeatability_n": len(again), "flops_scaled_by": scale, "predictor_features": predictor.feature_names(),
           "truth_ms": truth_arr.tolist(),
           "seconds": round(time.perf_counter() - t0, 1)}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="resnet18,resnet50,mobilenet_v2,vgg16_bn,efficientnet_b0")
    ap.add_argument("--fit", type=int, default=30, help="variants the predictor is fitted on")
    ap.add_argument("--variants", type=int, default=30, help="held-out variants every model is scored on")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per pass through a pool (beside the original)")
    ap.add_argument("--sessions", type=int, default=3,
                    help="passes over each pool, each with new sessions: a session's memory layout is noise too")
    ap.add_argument("--recheck", type=int, default=10,
                    help="held-out variants timed twice: the measurement's own repeatability")
    ap.add_argument("--target", default="ort-cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5, help="runs per model per round")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lut-repeat", type=int, default=20,
                    help="runs per LUT sweep point, as prune's --repeat (default 20, prune's own)")
    ap.add_argument("--min-block-ms", type=float, default=1e3 * BLOCK_SECONDS,
                    help="each timed block of a variant or the original lasts at least this long "
                         "(default: the tool's own, side_by_side.BLOCK_SECONDS)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--merge", action="store_true", help="keep the other models' rows of an earlier run in --out")
    args = ap.parse_args()
    backend = create_backend(args.target, timing=TimingConfig(warmup=3, repeat=args.repeat, threads=args.threads),
                             use_cache=False)
    out = Path(args.out)
    names = args.models.split(",")
    rows = []
    if args.merge and (out / "cost_model_accuracy.json").exists():
        rows = [r for r in json.loads((out / "cost_model_accuracy.json").read_text())["rows"] if r["model"] not in names]
    for name in names:
        rows.append(run_model(name, args.fit, args.variants, backend, args.seed, args.rounds, args.recheck,
                              args.sessions, args.min_block_ms / 1e3, args.lut_repeat))
        r = rows[-1]
        print(f"{name}: predictor MAPE {r['predictor']['mape_pct']}% rho {r['predictor']['spearman']}; "
              f"lut {r['lut']['mape_pct']}%; flops {r['flops']['mape_pct']}% ({r['seconds']} s)", flush=True)
        write_results(out, rows, args, backend)


def write_results(out: Path, rows: list[dict], args: argparse.Namespace, backend) -> None:
    """JSON + Markdown of the rows so far (after every model: a long run stopped early keeps its rows)."""
    out.mkdir(parents=True, exist_ok=True)
    meta = {"target": args.target, "settings": backend.settings(), "fit": args.fit, "held_out": args.variants,
            "load_average_now": list(os.getloadavg())}
    (out / "cost_model_accuracy.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    md = [f"# Cost-model accuracy on {args.target} ({args.threads} thread), held-out variants", "",
          "Per model: the predictor is fitted on some random variants and every cost model is scored on "
          "others (held out; both counts in the table). Each variant is timed beside the original in interleaved rounds, in one or more "
          "sets of new sessions (sessions x rounds x runs per round in the table); its latency is the median "
          "variant/original ratio x the original's median over the whole run. `FLOPs` is MACs scaled by one factor "
          "fitted on the same variants. `pooled`: a round goes once through all the variants of a pool (one "
          "variant's rounds spread over minutes); `pairs`: each variant's rounds are taken together, in new "
          "sessions beside the original. "
          f"Load average when written: {', '.join(f'{x:.1f}' for x in meta['load_average_now'])} on "
          f"{os.cpu_count()} cores.", "",
          "| model | commit | timed on | fitted / held out | baseline ms | held-out latency range | timing: sessions x rounds x runs (block at least) | predictor MAPE | "
          "predictor worst | predictor ρ | LUT MAPE | LUT ρ | FLOPs MAPE | FLOPs ρ | re-measured: MAPE | re-measured: ρ |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p, lu, f = r["predictor"], r["lut"], r["flops"]
        held = np.array(r["truth_ms"][r["fitted_on"]:]) / r["baseline_ms"]
        block = f" ({r['min_block_ms']} ms)" if r.get("min_block_ms") else ""
        md.append(f"| {r['model']} | {r.get('commit', 'before 94c1940')} | {r.get('cpu', EARLIER_CPU)} | "
                  f"{r['fitted_on']} / {r['held_out']} | "
                  f"{r['baseline_ms']:.2f} | "
                  f"{held.min():.2f}-{held.max():.2f}x | {r.get('protocol', 'pairs')} {r.get('sessions', 1)} x "
                  f"{r['rounds']} x {r['repeat']}{block} | "
                  f"{p['mape_pct']}% | {p['worst_pct']}% | {p['spearman']} | "
                  f"{lu['mape_pct']}% | {lu['spearman']} | {f['mape_pct']}% | {f['spearman']} | {_rep(r, 'mape_pct', '%')} "
                  f"| {_rep(r, 'spearman')} |")
    md += ["", "`re-measured`: the first held-out variants timed a second time the same way, scored against the "
           "first timing: the noise floor under every model's error."]
    md += _curve_table(rows)
    path = out / "cost_model_accuracy.md"
    path.write_text("\n".join(md) + "\n" + kept_notes(path))



def _curve_table(rows: list[dict]) -> list[str]:
    """Predictor MAPE / ρ on the held-out variants against the number of variants fitted on."""
    rows = [r for r in rows if r.get("predictor_by_fit_size")]
    if not rows:
        return []
    sizes = sorted({int(n) for r in rows for n in r["predictor_by_fit_size"]})
    md = ["", "## Predictor against the number of variants it is fitted on", "",
          "Fitted on the first n of the fit variants, scored on the same held-out variants (MAPE, ρ).", "",
          "| model | " + " | ".join(f"n = {n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for r in rows:
        curve = r["predictor_by_fit_size"]
        cells = [f"{curve[str(n)]['mape_pct']}%, {curve[str(n)]['spearman']}" if str(n) in curve else "-"
                 for n in sizes]
        md.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return md


def _rep(row: dict, key: str, unit: str = "") -> str:
    rep = row.get("repeatability")
    return f"{rep[key]}{unit} ({row['repeatability_n']})" if rep else "-"


if __name__ == "__main__":
    main()
