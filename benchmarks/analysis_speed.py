"""Dependency-analysis time on torchvision models (median of repeats), JSON + Markdown.

    python benchmarks/analysis_speed.py --models resnet50,mobilenet_v2 --repeat 5
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from hwprune_fx.analysis import analyze_dependencies
from hwprune_fx.pipeline import load_onnx_model
from hwprune_fx.zoo import build_model, export_onnx, input_shape_for


def measure(name: str, repeat: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.onnx"
        export_onnx(build_model(name), input_shape_for(name), path)
        t0 = time.perf_counter()
        loaded = load_onnx_model(path)
        load_s = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        analysis = analyze_dependencies(loaded.channel_graph)
        times.append(time.perf_counter() - t0)
    return {"model": name, "operators": len(loaded.channel_graph), "groups": len(analysis.groups),
            "prunable_groups": len(analysis.prunable_groups()), "load_seconds": round(load_s, 3),
            "analysis_seconds_median": round(statistics.median(times), 4),
            "analysis_seconds_min": round(min(times), 4), "repeat": repeat}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="resnet50,resnet18,mobilenet_v2,densenet121,vit_b_16")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    rows = []
    for name in args.models.split(","):
        rows.append(measure(name, args.repeat))
        print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "analysis_speed.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| model | operators | groups | prunable | load s | analysis s (median) |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['operators']} | {r['groups']} | {r['prunable_groups']} | {r['load_seconds']} | "
              f"{r['analysis_seconds_median']} |" for r in rows]
    (out / "analysis_speed.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
