"""Networks timed side by side in new sessions, in a process that has done nothing else.

    python -m hwprune_fx.targets.fresh_process SPEC.json MODEL.onnx [MODEL.onnx ...]

A network's latency relative to the original is not the same in every process. After a search,
the searching process read a pruned EfficientNet-B0 at 0.540-0.547 of the original in four
final checks, and fresh processes read it at 0.548-0.556 in the four checks in between (a
diagnostic run, session 15); in session 14 the searching process read a ResNet-50 HILP result
3.6% faster than the budget benchmark's fresh processes did. A deployed network runs in a
process of its own, so the timings that decide (confirmations and the final check) are taken
in one: :func:`time_sets_in_fresh_process` runs :func:`time_sets` there.

SPEC holds the backend (``Backend.spawn_spec()``), the number of session sets, the rounds and
the seconds per model; the last line of stdout is JSON, ``{"pid": ..., "sets": [[m, ...], ...]}``
of Measurement dicts. The module imports little (not the search or the analysis), so the
process starts in about a second, most of it ``import onnx``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import onnx

from hwprune_fx.errors import BackendError
from hwprune_fx.targets.base import Backend
from hwprune_fx.targets.measurement import Measurement

__all__ = ["time_sets", "time_sets_fresh_where_possible", "time_sets_in_fresh_process"]


def time_sets(backend: Backend, models: Sequence[onnx.ModelProto], sets: int, rounds: int,
              seconds_per_model: float) -> list[list[Measurement]]:
    """``sets`` sets of new sessions in this process, each timing ``models`` side by side in
    ``rounds`` or more interleaved rounds (:func:`~hwprune_fx.targets.side_by_side.round_medians`)."""
    from hwprune_fx.targets import side_by_side

    return [list(side_by_side.measure_side_by_side(backend, list(models), rounds=rounds,
                                                    seconds_per_model=seconds_per_model))
            for _ in range(sets)]


def time_sets_in_fresh_process(spec: dict, models: Sequence[onnx.ModelProto], sets: int, rounds: int,
                               seconds_per_model: float) -> tuple[list[list[Measurement]], int]:
    """:func:`time_sets` in a new Python process on the backend ``spec`` describes; and its pid.

    Raises:
        BackendError: the process failed (its last line of stderr says why).
    """
    from hwprune_fx.frontends.onnx_io import save_onnx

    with tempfile.TemporaryDirectory(prefix="hwprune-fx-timing-") as tmp:
        paths = [save_onnx(m, Path(tmp) / f"model{i}.onnx", check=False) for i, m in enumerate(models)]
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps({**spec, "sets": sets, "rounds": rounds,
                                         "seconds_per_model": seconds_per_model}))
        done = subprocess.run([sys.executable, "-m", __name__, str(spec_path), *map(str, paths)],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise BackendError(f"the timing's fresh process failed (exit {done.returncode}): {last}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return [[Measurement.from_dict(m) for m in one] for one in out["sets"]], int(out["pid"])


def time_sets_fresh_where_possible(backend: Backend, models: Sequence[onnx.ModelProto], sets: int, rounds: int,
                                   seconds_per_model: float) -> tuple[list[list[Measurement]], str, int]:
    """:func:`time_sets` in a fresh process where ``backend.spawn_spec()`` allows it, else in this
    one; with where it ran ("fresh" or "this") and that process's pid."""
    spec = backend.spawn_spec()
    if spec is None:
        return time_sets(backend, models, sets, rounds, seconds_per_model), "this", os.getpid()
    timed, pid = time_sets_in_fresh_process(spec, models, sets, rounds, seconds_per_model)
    return timed, "fresh", pid


def main(argv: list[str]) -> None:
    from hwprune_fx.frontends.onnx_io import load_onnx
    from hwprune_fx.targets import TimingConfig, create_backend

    spec_path, *model_paths = argv
    spec = json.loads(Path(spec_path).read_text())
    backend = create_backend(spec["target"], timing=TimingConfig(**spec["timing"]), use_cache=False)
    timed = time_sets(backend, [load_onnx(p) for p in model_paths], int(spec["sets"]), int(spec["rounds"]),
                      float(spec["seconds_per_model"]))
    print(json.dumps({"pid": os.getpid(), "sets": [[m.to_dict() for m in one] for one in timed]}))


if __name__ == "__main__":
    main(sys.argv[1:])
