"""Pairs of new sessions timing (original, pruned) side by side: in this process, or in a
process that has done nothing else.

    python -m hwprune_fx.targets.session_pairs SPEC.json ORIGINAL.onnx PRUNED.onnx

runs :func:`time_pairs` for :func:`time_pairs_in_fresh_process`. SPEC holds the backend
(``Backend.spawn_spec()``), the number of pairs and the seconds per model; the last line of
stdout is JSON, ``{"pid": ..., "pairs": [[original, pruned], ...]}`` of Measurement dicts.
The module imports little (not the search or the analysis), so the process starts in about
a second, most of it ``import onnx``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import onnx

from hwprune_fx.errors import BackendError
from hwprune_fx.targets.base import Backend
from hwprune_fx.targets.measurement import Measurement

__all__ = ["time_pairs", "time_pairs_in_fresh_process"]

Pair = tuple[Measurement, Measurement]


def time_pairs(backend: Backend, original: onnx.ModelProto, pruned: onnx.ModelProto, pairs: int,
               seconds_per_model: float) -> list[Pair]:
    """``pairs`` pairs of new sessions in this process, each timing (original, pruned) side by
    side in 2 or more interleaved rounds (:func:`~hwprune_fx.targets.side_by_side.round_medians`)."""
    from hwprune_fx.targets import side_by_side

    return [tuple(side_by_side.measure_side_by_side(backend, [original, pruned], rounds=2,
                                                     seconds_per_model=seconds_per_model))
            for _ in range(pairs)]


def time_pairs_in_fresh_process(spec: dict, original: onnx.ModelProto, pruned: onnx.ModelProto, pairs: int,
                                seconds_per_model: float) -> tuple[list[Pair], int]:
    """:func:`time_pairs` in a new Python process on the backend ``spec`` describes; and its pid.

    Raises:
        BackendError: the process failed (its last line of stderr says why).
    """
    from hwprune_fx.frontends.onnx_io import save_onnx

    with tempfile.TemporaryDirectory(prefix="hwprune-fx-pairs-") as tmp:
        paths = [save_onnx(m, Path(tmp) / f"{name}.onnx", check=False)
                 for name, m in (("original", original), ("pruned", pruned))]
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps({**spec, "pairs": pairs, "seconds_per_model": seconds_per_model}))
        done = subprocess.run([sys.executable, "-m", __name__, str(spec_path), *map(str, paths)],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise BackendError(f"the session pairs' fresh process failed (exit {done.returncode}): {last}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return [(_measurement(b), _measurement(f)) for b, f in out["pairs"]], int(out["pid"])


def _measurement(d: dict) -> Measurement:
    d = dict(d)
    d.pop("spread_ms", None)   # derived, not a field
    return Measurement(**d)


def main(argv: list[str]) -> None:
    from hwprune_fx.frontends.onnx_io import load_onnx
    from hwprune_fx.targets import TimingConfig, create_backend

    spec_path, original_path, pruned_path = argv
    spec = json.loads(Path(spec_path).read_text())
    backend = create_backend(spec["target"], timing=TimingConfig(**spec["timing"]), use_cache=False)
    timed = time_pairs(backend, load_onnx(original_path), load_onnx(pruned_path), int(spec["pairs"]),
                       float(spec["seconds_per_model"]))
    print(json.dumps({"pid": os.getpid(), "pairs": [[b.to_dict(), f.to_dict()] for b, f in timed]}))


if __name__ == "__main__":
    main(sys.argv[1:])
