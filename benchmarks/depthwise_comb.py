"""The depthwise comb: latency of depthwise convs (and the 1x1 convs that read them) one channel on
and off a multiple of 4, on a target (table + JSON).

Why the LUT sweeps depthwise layers in two classes of widths (``hwprune_fx.profiling.sweep.
DEPTHWISE_MULTIPLE``): on ort-cpu a depthwise width off the multiple runs several times slower
than its aligned neighbours, so a curve through mixed points is wrong for both.

    python benchmarks/depthwise_comb.py --models mobilenet_v2,efficientnet_b0
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from cost_model_accuracy import load_zoo_model
from provenance import code_commit

from hwprune_fx.profiling.sweep import DEPTHWISE_MULTIPLE, sweep_layer
from hwprune_fx.targets import TimingConfig, create_backend


def counts_around(full: int, share: float = 0.6, multiple: int = DEPTHWISE_MULTIPLE) -> list[int]:
    """Two multiples of 8 near ``share`` of ``full`` apart by 8, and every count between and beside them."""
    base = max(2 * multiple, int(full * share) // 8 * 8)
    return [c for c in range(base - multiple, base + 2 * multiple + 1) if 1 <= c <= full]


def run_model(name: str, backend, layers_per_model: int) -> list[dict]:
    layers = load_zoo_model(name)[2].layers
    depthwise = [i for i, layer in enumerate(layers) if layer.group > 1 and layer.group == layer.in_channels]
    picks = sorted({depthwise[j] for j in np.linspace(0, len(depthwise) - 1, layers_per_model).round().astype(int)})
    rows = []
    for i in picks:
        dw = layers[i]
        counts = counts_around(dw.in_channels)
        # the first dense layer after it that reads its channels at its resolution (the 1x1
        # projection; not a squeeze-excite conv, which reads them pooled to 1x1)
        reader = next((j for j in range(i + 1, len(layers)) if layers[j].group == 1
                       and layers[j].in_channels == dw.out_channels
                       and list(layers[j].input_shape[2:]) == list(dw.output_shape[2:])), None)
        for kind, index, axis in (("depthwise", i, "both"), ("1x1 reading it (input channels)", reader, "in")):
            if index is None:
                continue
            layer = layers[index]
            sweep = sweep_layer(layer, backend, axis, counts)
            kept, ms = np.array(sweep.counts), np.array(sweep.ms)
            on = kept % DEPTHWISE_MULTIPLE == 0
            # each count off the multiple against the line through its two aligned neighbours
            penalty = ms[~on] / np.interp(kept[~on], kept[on], ms[on])
            rows.append({"model": name, "layer": layer.name, "kind": kind,
                         "input_shape": list(layer.input_shape), "counts": kept.tolist(),
                         "us": [round(1000 * m, 2) for m in ms],
                         "off_over_on_median": round(float(np.median(penalty)), 3),
                         "off_over_on_min": round(float(penalty.min()), 3),
                         "off_over_on_max": round(float(penalty.max()), 3)})
            print(f"{name} {layer.name} {kind}: off/on {rows[-1]['off_over_on_median']}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mobilenet_v2,efficientnet_b0")
    ap.add_argument("--layers", type=int, default=5, help="depthwise layers per model, spread over its depth")
    ap.add_argument("--target", default="ort-cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    backend = create_backend(args.target, timing=TimingConfig(warmup=3, repeat=args.repeat, threads=args.threads),
                             use_cache=False)
    rows = [r for m in args.models.split(",") for r in run_model(m, backend, args.layers)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"target": args.target, "settings": backend.settings(), "multiple": DEPTHWISE_MULTIPLE,
            "commit": code_commit()}
    (out / "depthwise_comb.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    md = [f"# Depthwise widths on and off a multiple of {DEPTHWISE_MULTIPLE}: {args.target}, "
          f"{args.threads} thread (code {meta['commit']})", "",
          "Each layer is swept over every count around 60% of its width, in interleaved rounds "
          "(`sweep_layer`). `off / on`: each count off the multiple against the line through its two "
          "neighbours on it (median, min-max over the counts).", "",
          "| model | layer | kind | input | counts | off / on: median | min-max |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {r['model']} | {r['layer']} | {r['kind']} | {'x'.join(map(str, r['input_shape']))} | "
           f"{r['counts'][0]}-{r['counts'][-1]} | {r['off_over_on_median']} | "
           f"{r['off_over_on_min']}-{r['off_over_on_max']} |" for r in rows]
    md += ["", "## Every point (us)", ""]
    md += [f"- {r['model']} `{r['layer']}` ({r['kind']}): " +
           ", ".join(f"{c}: {u}" for c, u in zip(r["counts"], r["us"])) for r in rows]
    (out / "depthwise_comb.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
