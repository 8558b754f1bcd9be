"""The latency staircase: sweeps of ResNet-50 layers on a target (table + PNG + JSON).

    python benchmarks/staircase.py --layers layer1.0.conv2,layer3.0.conv2,layer4.0.conv2 --target ort-cpu
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from notes import kept_notes

from hwprune_fx.emit.plots import plot_sweep
from hwprune_fx.pipeline import load_onnx_model
from hwprune_fx.profiling.profile import find_layer
from hwprune_fx.profiling.sweep import sweep_layer
from hwprune_fx.targets import TimingConfig, create_backend
from hwprune_fx.zoo import build_model, export_onnx, input_shape_for


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--layers", default="layer1.0.conv2,layer3.0.conv2,layer4.0.conv2")
    ap.add_argument("--target", default="ort-cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--step", type=int, default=4, help="channel-count step of the sweep")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    backend = create_backend(args.target, timing=TimingConfig(warmup=10, repeat=args.repeat, threads=args.threads),
                             use_cache=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        export_onnx(build_model(args.model), input_shape_for(args.model), path)
        loaded = load_onnx_model(path)
    results = []
    md = [f"# Latency staircase: {args.model} on {args.target} ({args.threads} thread)", ""]
    for query in args.layers.split(","):
        layer = find_layer(loaded.graph, query)
        counts = list(range(args.step, layer.out_channels + 1, args.step))
        sw = sweep_layer(layer, backend, "out", counts)
        png = out / f"staircase_{args.model}_{query.replace('.', '_')}.png"
        plot_sweep(sw, png, args.target)
        ms = np.array(sw.ms)
        # plateaus: counts where adding channels costs (almost) nothing
        flat = [c for c, a, b in zip(sw.counts[1:], ms[:-1], ms[1:]) if b <= a * 1.01]
        steps = sw.steps(0.05)
        results.append({"layer": layer.name, "query": query, "input_shape": list(layer.input_shape),
                        "in_channels": layer.in_channels, "sweep": sw.to_dict(), "steps_over_5pct": steps,
                        "flat_counts": flat, "png": png.name})
        md += [f"## {query} ({layer.name}, input {'x'.join(map(str, layer.input_shape))})", "",
               f"![staircase]({png.name})", "",
               f"Jumps > 5%: {', '.join(map(str, steps)) or 'none'}", "",
               "| kept out channels | ms (median) | vs full |", "|---|---|---|"]
        md += [f"| {c} | {m:.4f} | {m / ms[-1]:.3f} |" for c, m in zip(sw.counts, sw.ms)]
        md.append("")
        print(f"{query}: {len(counts)} counts, jumps at {steps}", flush=True)
    (out / "staircase.json").write_text(json.dumps({"target": args.target, "settings": backend.settings(),
                                                    "layers": results}, indent=2) + "\n")
    path = out / "staircase.md"
    path.write_text("\n".join(md) + "\n" + kept_notes(path))


if __name__ == "__main__":
    main()
