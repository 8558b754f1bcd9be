"""Opti-Cut's give-back, and its give-back around a chunk that fell off a latency cliff.

The latency here is synthetic and exact: the kept channels, plus a penalty while the first
group's width is off a multiple of 16 (onnxruntime's NCHWc kernels on an AVX-512 CPU pad such
widths up to the next 16). The cost model counts channels and knows nothing of the cliff.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

from hwprune_fx.search.give_back import give_back, give_back_around
from tests.test_alignment import _CountCost, _net, _setup

opti_cut_module = importlib.import_module("hwprune_fx.search.opti_cut")
OFF_16_PENALTY = 24


def _cliff_case(tmp_path: Path):
    """Groups of 32 and 64 channels; latency = kept channels + a penalty while the 32-channel
    group's width is not a multiple of 16."""
    _, analysis, channels = _setup(_net(tmp_path, 32, 64))
    by_size = {g.size: g.units for g in analysis.prunable_groups()}
    small, large = by_size[32], by_size[64]

    def latency(keep: np.ndarray) -> float:
        k = int(keep[small].sum())
        return float(k + int(keep[large].sum()) + (OFF_16_PENALTY if k % 16 else 0))

    return analysis, channels, small, large, latency


def _no_record(trial: np.ndarray, ms: float) -> None:
    pass


def test_give_back_returns_the_longest_tail_that_keeps_the_budget() -> None:
    keep = np.zeros(40, bool)
    chunks = [np.arange(i, i + 4) for i in range(0, 40, 4)]        # 10 chunks of 4, all removed
    count = lambda k: float(k.sum())  # noqa: E731
    got = give_back(keep, chunks, count, count, budget_ms=29.0, fill=1.0, record=_no_record)
    assert got is not None
    trial, ms = got
    assert ms == 28.0 and trial[12:].all() and not trial[:12].any()   # 7 chunks back, the 8th would cross


def test_give_back_confirms_with_the_real_measurement_and_falls_back_when_it_disagrees() -> None:
    keep = np.zeros(40, bool)
    chunks = [np.arange(i, i + 4) for i in range(0, 40, 4)]
    count = lambda k: float(k.sum())  # noqa: E731
    confirmed: list[float] = []

    def slower(k: np.ndarray) -> float:   # the real measurement reads 10 more than the probe
        confirmed.append(count(k) + 10)
        return confirmed[-1]

    assert give_back(keep, chunks, count, slower, budget_ms=29.0, fill=1.0, record=_no_record) is None
    assert confirmed and all(c > 29.0 for c in confirmed) and len(confirmed) <= 3


def test_give_back_bisects_until_the_network_fills_the_budget_to_fill() -> None:
    """20 single-unit chunks over-cut a 100-unit network to 80 (latency = kept units) under a
    budget of 99: the give-back returns chunks until a probe reaches ``fill`` of the budget:
    95 at the default (0.95), 98 at 0.98, both within the budget."""
    truth = lambda k: float(k.sum())  # noqa: E731
    keep = np.ones(100, bool)
    keep[80:] = False
    taken = [np.array([i]) for i in range(80, 100)]
    kept = {}
    for fill in (opti_cut_module.FILL, 0.98):
        settled, ms = give_back(keep, taken, truth, truth, 99.0, fill, _no_record)
        kept[fill] = truth(settled)
        assert ms == kept[fill] <= 99.0
    assert opti_cut_module.FILL == 0.95 and kept == {0.95: 95.0, 0.98: 98.0}


def test_give_back_over_many_chunks_bisects_down_to_one_chunk() -> None:
    """1000 single-unit chunks over-cut a 1001-unit network to 1 unit (latency = kept units)
    under a budget of 40: 6 halvings leave 15 chunks between the last probes and settle at 33;
    by default the give-back takes the probes it needs (up to log2 of the range) and lands
    within ``fill`` of the budget."""
    truth = lambda k: float(k.sum())  # noqa: E731
    keep = np.zeros(1001, bool)
    keep[0] = True
    taken = [np.array([i]) for i in range(1, 1001)]
    fill = opti_cut_module.FILL
    timings: list[float] = []
    settled, ms = give_back(keep, taken, truth, truth, 40.0, fill, lambda t, m: timings.append(m))
    assert fill * 40.0 <= ms == truth(settled) <= 40.0
    assert 6 < len(timings) <= 10
    timings.clear()
    _, six = give_back(keep, taken, truth, truth, 40.0, fill, lambda t, m: timings.append(m), max_probes=6)
    assert six == 33.0 and len(timings) == 6


def test_give_back_around_keeps_the_crossing_group_and_returns_the_others(tmp_path: Path) -> None:
    analysis, _, small, large, latency = _cliff_case(tmp_path)
    # cut in this order: large 64->56, small 32->24 (off 16: slower), large 56->48, small 24->16
    taken = [large[:8], small[:8], large[8:16], small[8:16]]
    groups = [1, 0, 1, 0]
    keep = np.ones(analysis.num_units, bool)
    for c in taken:
        keep[c] = False
    assert latency(keep) == 16 + 48
    got = give_back_around(keep, taken, groups, latency, latency, budget_ms=80.0, fill=0.95,
                           record=_no_record)
    assert got is not None
    trial, ms = got
    # the small group stays at 16 (returning a chunk puts it off 16); the large one comes back whole
    assert int(trial[small].sum()) == 16 and int(trial[large].sum()) == 64 and ms == 80.0
    # the crossing chunk's group is all that was cut: nothing else to return
    only_small = np.ones(analysis.num_units, bool)
    only_small[small[:16]] = False
    assert give_back_around(only_small, [small[:8], small[8:16]], [0, 0], latency, latency, 80.0, 0.95,
                            _no_record) is None


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("under", [20, 30])
def test_opti_cut_fills_the_budget_past_a_latency_cliff(tmp_path: Path, monkeypatch, seed: int, under: int) -> None:
    """The chunk that takes the 32-channel group from 24 back to 16 saves 32 at once; the plain
    give-back can only return it (and cross the budget again), so without the give-back around it
    the search stopped at 63-85% of the budget on these cases, against 94.7-97% with it."""
    analysis, channels, small, large, latency = _cliff_case(tmp_path)
    scores = np.random.default_rng(seed).random(analysis.num_units)
    base = latency(np.ones(analysis.num_units, bool))
    budget = base - under

    res = opti_cut_module.opti_cut(analysis, scores, _CountCost(), channels, latency, budget, base, align=8)
    assert res.reached and res.measured_ms == latency(res.keep)
    assert 0.9 * budget <= res.measured_ms <= budget      # the next 8 channels would cross it

    monkeypatch.setattr(opti_cut_module, "give_back_around", lambda *a, **k: None)
    plain = opti_cut_module.opti_cut(analysis, scores, _CountCost(), channels, latency, budget, base, align=8)
    assert plain.reached and plain.measured_ms < 0.9 * budget
