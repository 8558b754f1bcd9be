"""Sweeps time their channel counts in interleaved rounds, so one disturbed block cannot bend the staircase.

A scripted backend stands in for the clock (latency proportional to the kept channels, one block
slowed as a disturbance would); the layers are ResNet-18's own.
"""
from __future__ import annotations

import pytest

from hwprune_fx.analysis import analyze_dependencies
from hwprune_fx.cost_models import LayerChannels
from hwprune_fx.pipeline import load_onnx_model
from hwprune_fx.profiling import sweep as sweep_module
from hwprune_fx.profiling.layers import find_layers
from hwprune_fx.profiling.sweep import MIN_BLOCK_SECONDS, block_timing, sweep_layer
from hwprune_fx.targets import TimingConfig
from hwprune_fx.targets.base import Backend
from hwprune_fx.targets.measurement import summarize


class ScriptedBackend(Backend):
    """Each block of a model with ``c`` output channels reads ``c / 100`` ms; block number
    ``slow_block`` (counted over all blocks) reads ``slow_factor`` times that."""

    name = "scripted"

    def __init__(self, slow_block: int = -1, slow_factor: float = 1.0, **kw) -> None:
        super().__init__(**kw)
        self.slow_block, self.slow_factor = slow_block, slow_factor
        # shared with the copies ``with_timing`` makes (a shallow copy): what every block timed
        self.calls: list[int] = []   # output channels of each block, in order
        self.timings: list[TimingConfig] = []

    def _time_onnx(self, model, feeds):
        raise AssertionError("sweeps time through block timers")

    def block_timer(self, model, feeds):
        width = int(model.graph.initializer[0].dims[0])

        def block():
            self.calls.append(width)
            self.timings.append(self.timing)
            ms = width / 100 * (self.slow_factor if len(self.calls) - 1 == self.slow_block else 1.0)
            return summarize(self.name, [ms], 0, 1, {})
        return block


@pytest.fixture(scope="module")
def conv_layer(torchvision_onnx):
    loaded = load_onnx_model(torchvision_onnx("resnet18", 32))
    layers = LayerChannels.build(analyze_dependencies(loaded.channel_graph), find_layers(loaded.graph)).layers
    return next(layer for layer in layers if layer.op_type == "Conv" and layer.out_channels == 64)


def test_one_disturbed_block_does_not_move_a_point(conv_layer) -> None:
    counts = [16, 32, 48, 64]
    backend = ScriptedBackend(slow_block=5, slow_factor=1.5, use_cache=False)
    seen: list[tuple[int, int]] = []
    sweep = sweep_layer(conv_layer, backend, "out", counts, progress=lambda i, n: seen.append((i, n)))
    assert sweep.ms == pytest.approx([c / 100 for c in counts])
    assert len(backend.calls) == 3 * len(counts)
    # every round times every count, the first count rotating: no count is always first
    rounds = [backend.calls[i:i + 4] for i in range(0, 12, 4)]
    assert all(sorted(r) == counts for r in rounds) and len({r[0] for r in rounds}) == 3
    # progress: each count as it is compiled, then each round
    assert seen == [(i, 7) for i in range(1, 8)]


def test_one_round_would_have_kept_the_disturbance(conv_layer) -> None:
    """The same script read once per count (what sweeps did before rounds): the point moves."""
    backend = ScriptedBackend(slow_block=1, slow_factor=1.5, use_cache=False)
    sweep = sweep_layer(conv_layer, backend, "out", [16, 32, 48, 64], rounds=1)
    assert sweep.ms[1] == pytest.approx(1.5 * 0.32)


def test_blocks_split_the_repeats_and_cover_a_minimum_window(conv_layer) -> None:
    backend = ScriptedBackend(timing=TimingConfig(warmup=5, repeat=20), use_cache=False)
    sweep_layer(conv_layer, backend, "out", [32, 64])
    assert {t.repeat for t in backend.timings} == {7}
    assert {t.min_seconds for t in backend.timings} == {MIN_BLOCK_SECONDS}
    assert backend.timing.repeat == 20   # the caller's backend keeps its own timing
    assert block_timing(TimingConfig(repeat=2, min_seconds=0.5), 3).repeat == 3
    assert block_timing(TimingConfig(repeat=2, min_seconds=0.5), 3).min_seconds == 0.5


def test_large_layers_are_timed_one_count_at_a_time(monkeypatch, conv_layer) -> None:
    """Above ``KEEP_OPEN_BYTES`` a count's blocks run together, so only one count is held."""
    monkeypatch.setattr(sweep_module, "KEEP_OPEN_BYTES", 0)
    backend = ScriptedBackend(use_cache=False)
    seen: list[tuple[int, int]] = []
    sweep = sweep_layer(conv_layer, backend, "out", [16, 64], progress=lambda i, n: seen.append((i, n)))
    assert backend.calls == [16, 16, 16, 64, 64, 64]
    assert sweep.ms == pytest.approx([0.16, 0.64]) and seen == [(1, 2), (2, 2)]


def test_rounds_are_part_of_the_cache_key(tmp_path, conv_layer) -> None:
    backend = ScriptedBackend(cache_dir=tmp_path)
    sweep_layer(conv_layer, backend, "out", [32, 64])
    sweep_layer(conv_layer, backend, "out", [32, 64])
    assert len(backend.calls) == 6            # the second sweep came from the cache
    sweep_layer(conv_layer, backend, "out", [32, 64], rounds=1)
    assert len(backend.calls) == 8            # other rounds, other key: timed


def test_counts_may_be_numpy_integers(conv_layer) -> None:
    """A caller's ``np.arange`` of counts works (the cache key is JSON) and the sweep holds ints."""
    import numpy as np

    sweep = sweep_layer(conv_layer, ScriptedBackend(use_cache=False), "out", np.array([32, 64]))
    assert sweep.counts == (32, 64) and all(type(c) is int for c in sweep.counts)
