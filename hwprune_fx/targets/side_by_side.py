"""Side-by-side timing: several networks measured in interleaved rounds of one session.

Machine speed drifts (other processes, thermal state, frequency). A network measured
minutes after another is compared across that drift; measured in alternating rounds, both
see the same machine. Each round times every model once (a block of ``timing.repeat`` runs,
the order rotating every round so no model is always first), and the result per model is the
median of its per-round medians, with the spread over rounds.

A fixed number of rounds is seconds on ResNet-50 and a fraction of a second on MobileNetV2,
whose rounds are as noisy. 12 session pairs of MobileNetV2 at 60% read the pruned/original ratio
with a standard deviation of 0.0073 at 2 rounds, 0.0053 at 8 and 0.0048 at 12 rounds by time
(``benchmarks/results/round_noise.md``); a scratch probe on another pruned MobileNetV2 read
0.024 at 2 rounds and 0.008 at 8. ``seconds_per_model`` adds rounds until every model
has had that much timed running, up to ``max_rounds``, so a fast network is timed as closely
as a slow one.

A block must also be long enough. A block of 3 runs of a pruned network that runs in 4 ms
starts a few milliseconds after the other network's block and reads the caches that one left:
fresh-process final checks with blocks of 3 runs read a pruned EfficientNet-B0's (40%) ratio
to the original 10% higher than blocks of 100 ms or more did, MobileNetV2's 3% and ResNet-18's
2%; blocks of 10 runs still read EfficientNet-B0's 2% high, and 30 runs and 100 ms agreed
within 1% on all three (``benchmarks/results/block_length.md``). The budget searches time
blocks of at least ``BLOCK_SECONDS`` (``TimingConfig.min_seconds``).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import onnx

from hwprune_fx.targets.base import Backend
from hwprune_fx.targets.measurement import Measurement, summarize

__all__ = ["BLOCK_SECONDS", "MAX_ROUNDS", "measure_side_by_side", "pooled_ratios", "round_medians"]

#: past this, more rounds stopped tightening a session pair's ratio (see the module docstring)
MAX_ROUNDS = 12
#: timed running per block, at the least, in the searches' probes, confirmations and final check
#: (see the module docstring); a ResNet-50 block of 3 runs is longer already
BLOCK_SECONDS = 0.1


def round_medians(backend: Backend, models: Sequence[onnx.ModelProto], rounds: int,
                  feeds: Sequence[dict[str, np.ndarray]] | None = None,
                  progress: Callable[[str], None] | None = None, seconds_per_model: float = 0.0,
                  max_rounds: int = MAX_ROUNDS) -> tuple[list[list[float]], list[Measurement]]:
    """Per model, the median of each round's block (ms), and each model's last block.

    At least ``rounds`` rounds; more (up to ``max_rounds``) while the models' timed runs add up
    to less than ``seconds_per_model`` each on average (a block counts as its median x runs).
    """
    from hwprune_fx.oracle import random_inputs

    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    inputs = list(feeds) if feeds is not None else [random_inputs(m, batch=1) for m in models]
    blocks = [backend.block_timer(m, x) for m, x in zip(models, inputs)]
    out: list[list[float]] = [[] for _ in models]
    last: list[Measurement] = [None] * len(models)  # type: ignore[list-item]
    n = len(models)
    timed_ms = 0.0
    r = 0
    while r < rounds or (r < max_rounds and timed_ms < 1e3 * seconds_per_model * n):
        for k in range(n):
            i = (r + k) % n
            last[i] = blocks[i]()
            out[i].append(last[i].median_ms)
            timed_ms += last[i].median_ms * last[i].repeats
        r += 1
        if progress:
            progress(f"measurement round {r}/{rounds}" if r <= rounds else f"measurement round {r} (timed on)")
    return out, last


def measure_side_by_side(backend: Backend, models: Sequence[onnx.ModelProto], rounds: int = 5,
                         feeds: Sequence[dict[str, np.ndarray]] | None = None,
                         seconds_per_model: float = 0.0) -> list[Measurement]:
    """Per model, a Measurement whose samples are the medians of ``rounds`` or more interleaved
    blocks (:func:`round_medians`); ``settings["rounds"]`` says how many were taken.

    Never cached: the point is that the numbers come from one session.
    """
    per_model, last = round_medians(backend, models, rounds, feeds, seconds_per_model=seconds_per_model)
    rounds = len(per_model[0])
    t = backend.timing
    # each model's own settings (e.g. TVM's untuned-workload count) stay with its numbers
    return [summarize(backend.name, samples, t.warmup, t.threads,
                      {**backend.settings(), **(m.settings if m else {}), "rounds": rounds})
            for samples, m in zip(per_model, last)]


def pooled_ratios(backend: Backend, reference: onnx.ModelProto, models: Sequence[onnx.ModelProto], rounds: int,
                  passes: int = 1, feeds: dict[str, np.ndarray] | None = None,
                  progress: Callable[[str], None] | None = None) -> tuple[list[list[float]], list[float]]:
    """Per model, its time over the reference's once per round and pass; and the reference's block medians (ms).

    Why not one model at a time: on a shared machine some models (seen on MobileNetV2
    variants) run tens of percent slower for a second or two while the reference barely
    moves, so all the rounds of one model, taken within such a spell, read slow together.
    Here every model keeps its compiled session, and each round goes once through all of
    them, a reference block before every model block: one model's rounds are spread over the
    whole run. Each pass builds fresh sessions, so a session's memory layout is sampled too.
    All models are held compiled at once: the caller sizes the pool.
    """
    from hwprune_fx.oracle import random_inputs

    if rounds < 1 or passes < 1:
        raise ValueError("rounds and passes must be >= 1")
    x = feeds if feeds is not None else random_inputs(reference, batch=1)
    ratios: list[list[float]] = [[] for _ in models]
    reference_ms: list[float] = []
    for p in range(passes):
        ref = backend.block_timer(reference, x)
        blocks = [backend.block_timer(m, x) for m in models]
        for r in range(rounds):
            for i, block in enumerate(blocks):
                reference_ms.append(ref().median_ms)
                ratios[i].append(block().median_ms / reference_ms[-1])
            if progress:
                progress(f"{len(models)} models: pass {p + 1}/{passes}, round {r + 1}/{rounds}")
        del blocks, ref
    return ratios, reference_ms
