"""What one re-score costs (``--rescore``): a data-driven criterion scored on a partly cut network,
per calibration image, on one torch thread (table + JSON).

    python benchmarks/rescore_cost.py --models resnet50 --criterion ig-mean --images 4
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from cost_model_accuracy import load_zoo_model
from provenance import code_commit

from hwprune_fx.calib import CalibrationData
from hwprune_fx.criteria import create_criterion


def run_model(name: str, criterion: str, images: int) -> dict:
    """The first score (builds the masked model and, for ig-mean, the means) and one re-score
    with every third removable unit gone; seconds, and seconds per image for the re-score."""
    loaded, analysis, _ = load_zoo_model(name)
    spec = loaded.original.graph.input[0]
    shape = [images, *(d.dim_value for d in spec.type.tensor_type.shape.dim[1:])]
    calib = CalibrationData({spec.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)},
                            "random")
    crit = create_criterion(criterion, model=loaded.original, calib=calib)
    t0 = time.perf_counter()
    crit.score(analysis)
    first = time.perf_counter() - t0
    keep = np.ones(analysis.num_units, dtype=bool)
    keep[np.flatnonzero(~analysis.unit_pinned)[::3]] = False
    t0 = time.perf_counter()
    crit.score(analysis, keep)
    again = time.perf_counter() - t0
    return {"model": name, "criterion": criterion, "images": images, "input": shape[1:],
            "first_score_s": round(first, 2), "rescore_s": round(again, 2),
            "rescore_s_per_image": round(again / images, 3), "commit": code_commit()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet50")
    ap.add_argument("--criterion", default="ig-mean")
    ap.add_argument("--images", type=int, default=4, help="calibration images (random, the cost does not depend on them)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [run_model(m, args.criterion, args.images) for m in args.models.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rescore_cost.json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    md = ["# What one re-score costs (1 torch thread)", "",
          "| model | criterion | images | first score s | re-score s | re-score s per image | commit |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {r['model']} | {r['criterion']} | {r['images']} | {r['first_score_s']} | {r['rescore_s']} "
           f"| {r['rescore_s_per_image']} | {r['commit']} |" for r in rows]
    (out / "rescore_cost.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
