"""``--align N|auto``: staircase edges and widths, the align pass, per-group alignment in the searches."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from hwprune_fx.analysis import analyze_dependencies
from hwprune_fx.cost_models.base import LayerChannels
from hwprune_fx.cost_models.lut import LutCostModel
from hwprune_fx.errors import UserError
from hwprune_fx.oracle import onnx_oracle
from hwprune_fx.passes import AlignChannelsPass
from hwprune_fx.pipeline import load_onnx_model
from hwprune_fx.profiling.layers import find_layers
from hwprune_fx.profiling.sweep import Sweep
from hwprune_fx.search.hilp import hilp_search
from hwprune_fx.search.opti_cut import opti_cut
from hwprune_fx.search.staircase import (auto_alignment, find_staircase, resolve_alignment, staircase_counts,
                                         staircase_edges)
from tests.onnx_builders import export


class Net(nn.Module):
    """Two prunable groups (conv a's and conv b's outputs); conv c's output is the graph's."""

    def __init__(self, ca: int = 30, cb: int = 20) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, ca, 3, padding=1), nn.Conv2d(ca, cb, 3, padding=1), nn.Conv2d(cb, 4, 1)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


def _net(tmp_path: Path, ca: int = 30, cb: int = 20) -> onnx.ModelProto:
    return onnx.load(str(export(Net(ca, cb), (1, 3, 8, 8), tmp_path / f"net_{ca}_{cb}.onnx")))


def _setup(model: onnx.ModelProto):
    loaded = load_onnx_model(model)
    analysis = analyze_dependencies(loaded.channel_graph)
    return loaded, analysis, LayerChannels.build(analysis, find_layers(loaded.graph))


def _sizes(analysis) -> dict[int, int]:
    return {g.id: g.size for g in analysis.prunable_groups()}


# --- synthetic staircases ----------------------------------------------------------------------
COUNTS = np.arange(1, 65)


def _stair(width: int, counts: np.ndarray = COUNTS) -> np.ndarray:
    return 1.0 + 0.1 * np.ceil(counts / width)


@pytest.mark.parametrize("width", [8, 16])
def test_exact_staircase_edges_are_plateau_right_ends(width: int) -> None:
    s = find_staircase(COUNTS, _stair(width))
    assert s.edges == tuple(range(width, 65, width))
    assert s.width == width and not s.smooth


def test_noisy_staircase_still_shows_its_width() -> None:
    rng = np.random.default_rng(0)
    for width in (8, 16):
        s = find_staircase(COUNTS, _stair(width) * (1 + 0.005 * rng.standard_normal(COUNTS.size)))
        assert s.width == width
        assert set(s.edges) <= set(range(width, 65, width)) | {64}


def test_isolated_timing_spike_is_not_a_step() -> None:
    ms = _stair(8)
    ms[20] *= 1.3
    assert find_staircase(COUNTS, ms).edges == tuple(range(8, 65, 8))


def test_sawtooth_of_input_channels_has_its_dips_as_edges() -> None:
    """ORT pays a reorder for input channel counts off the block: the multiples are dips."""
    ms = 0.2 + 0.002 * COUNTS + 0.05 * (COUNTS % 8 != 0)
    s = find_staircase(COUNTS, ms)
    assert s.edges == tuple(range(8, 65, 8)) and s.width == 8


def test_flat_and_smooth_dense_sweeps_have_no_staircase() -> None:
    for ms in (np.ones(COUNTS.size), 1.0 + 0.002 * COUNTS):
        s = find_staircase(COUNTS, ms)
        assert s.width is None and s.smooth and s.edges == (64,)


def test_sparse_sweep_cannot_show_a_staircase() -> None:
    sparse = np.arange(8, 65, 8)
    s = find_staircase(sparse, _stair(8, sparse))
    assert s.width is None and not s.smooth


def test_unsorted_input_is_sorted_first() -> None:
    perm = np.random.default_rng(1).permutation(COUNTS.size)
    assert find_staircase(COUNTS[perm], _stair(8)[perm]).width == 8


def _fake_lut(channels: LayerChannels, widths: dict[int, int]) -> LutCostModel:
    """A LUT whose layer ``i`` has an output staircase of ``widths[i]`` (others flat), every count."""
    outs, ins = [], []
    for i, layer in enumerate(channels.layers):
        c = np.arange(1, layer.out_channels + 1)
        ms = 1.0 + 0.2 * np.ceil(c / widths[i]) if i in widths else np.ones(c.size)
        outs.append(Sweep(layer.name, "out", tuple(c.tolist()), tuple(ms.tolist())))
        cin = np.arange(1, layer.in_channels + 1)
        ins.append(Sweep(layer.name, "in", tuple(cin.tolist()), tuple([1.0] * cin.size))
                   if channels.in_units[i].size else None)
    return LutCostModel(channels, outs, ins)


def test_auto_alignment_reads_each_groups_own_staircase(tmp_path: Path) -> None:
    _, analysis, channels = _setup(_net(tmp_path, 48, 40))
    lut = _fake_lut(channels, {0: 16, 1: 8})   # layers a, b (topological order)
    sizes = _sizes(analysis)
    widths = auto_alignment(lut, analysis)
    assert sorted(widths.values()) == [8, 16]
    by_size = {sizes[g]: w for g, w in widths.items()}
    assert by_size == {48: 16, 40: 8}
    edges = staircase_edges(lut, analysis)
    assert {sizes[g]: e for g, e in edges.items()} == {48: [16, 32, 48], 40: [8, 16, 24, 32, 40]}
    flat = auto_alignment(_fake_lut(channels, {}), analysis)
    assert set(flat.values()) == {1}   # dense and flat: every channel counts


def test_resolve_alignment(tmp_path: Path) -> None:
    _, analysis, channels = _setup(_net(tmp_path, 48, 40))
    assert resolve_alignment(8, None, analysis) == (8, None)
    assert resolve_alignment("4", None, analysis) == (4, None)
    lut = _fake_lut(channels, {0: 16, 1: 8})
    align, edges = resolve_alignment("auto", lut, analysis)
    assert isinstance(align, dict) and set(align) == set(edges) == set(_sizes(analysis))
    for bad in ("eight", 0, -8, "2.5"):
        with pytest.raises(UserError):
            resolve_alignment(bad, None, analysis)
    with pytest.raises(UserError, match="lut"):
        resolve_alignment("auto", None, analysis)


def test_staircase_counts_are_dense_at_the_top() -> None:
    counts = staircase_counts(256, span=32)
    assert counts[-1] == 256 and set(range(224, 257)) <= set(counts) and counts[0] == 32


# --- the align pass ------------------------------------------------------------------------------
def test_align_pass_rounds_groups_down_exactly(tmp_path: Path) -> None:
    model = _net(tmp_path, 30, 20)
    p = AlignChannelsPass(8)
    prepared, plan = p.plan_for(model)
    result = p(model)
    assert result.modified and result.model is not model
    assert sorted(g["after"] for g in plan.group_sizes()) == [16, 24]
    oracle = onnx_oracle(model, result.model, plan.removed_channels)
    assert oracle.exact, oracle
    _, after, _ = _setup(result.model)
    assert sorted(_sizes(after).values()) == [16, 24]
    again = AlignChannelsPass(8)(result.model)
    assert not again.modified and again.model is result.model


def test_align_pass_leaves_aligned_and_small_groups_alone(tmp_path: Path) -> None:
    assert not AlignChannelsPass(8)(_net(tmp_path, 32, 16)).modified
    res = AlignChannelsPass(8)(_net(tmp_path, 30, 5))   # 5 < 8: kept whole
    _, after, _ = _setup(res.model)
    assert sorted(_sizes(after).values()) == [5, 24]


def test_align_pass_auto_uses_per_group_widths(tmp_path: Path) -> None:
    model = _net(tmp_path, 30, 20)
    _, analysis, _ = _setup(model)
    ga, gb = sorted(_sizes(analysis), key=lambda g: -_sizes(analysis)[g])   # 30, 20
    p = AlignChannelsPass("auto", widths={ga: 16, gb: 8})
    _, plan = p.plan_for(model)
    result = p(model)
    assert sorted(g["after"] for g in plan.group_sizes()) == [16, 16]
    assert onnx_oracle(model, result.model, plan.removed_channels).exact
    with pytest.raises(UserError):
        AlignChannelsPass("auto")
    with pytest.raises(UserError):
        AlignChannelsPass(0)


def test_align_pass_options_from_text_values() -> None:
    assert AlignChannelsPass.name == "align"
    assert AlignChannelsPass(8).multiple == 8
    assert AlignChannelsPass("auto", widths={3: 16}).multiple == {3: 16}


# --- searches with per-group alignment ----------------------------------------------------------
class _CountCost:
    """Latency = kept units (a trivial cost model for search tests)."""

    name = "count"

    def predict(self, keep: np.ndarray) -> float:
        return float(keep.sum())

    def delta(self, keep: np.ndarray, remove: np.ndarray) -> float:
        return -float(keep[remove].sum())


def test_opti_cut_takes_chunks_of_each_groups_own_width(tmp_path: Path) -> None:
    _, analysis, channels = _setup(_net(tmp_path, 30, 20))
    sizes = _sizes(analysis)
    ga, gb = sorted(sizes, key=lambda g: -sizes[g])
    align = {ga: 8, gb: 4}
    scores = np.random.default_rng(0).random(analysis.num_units)
    seen: list[dict[int, int]] = []

    def measure(keep: np.ndarray) -> float:
        seen.append({g.id: int(keep[g.units].sum()) for g in analysis.prunable_groups()})
        return float(keep.sum())

    base = float(analysis.num_units)
    res = opti_cut(analysis, scores, _CountCost(), channels, measure, base - 20, base, align=align,
                   measure_every=1)
    assert res.reached
    for kept in seen:
        assert kept[ga] % 8 == 0 and kept[gb] % 4 == 0
    # the int form still works and is the same as a mapping that gives every group 8
    a = opti_cut(analysis, scores, _CountCost(), channels, lambda k: float(k.sum()), base - 20, base, align=8)
    b = opti_cut(analysis, scores, _CountCost(), channels, lambda k: float(k.sum()), base - 20, base,
                 align=dict.fromkeys(sizes, 8))
    assert np.array_equal(a.keep, b.keep)


def test_hilp_cuts_to_the_next_staircase_edge(tmp_path: Path) -> None:
    _, analysis, _ = _setup(_net(tmp_path, 30, 20))
    sizes = _sizes(analysis)
    ga, gb = sorted(sizes, key=lambda g: -sizes[g])
    edges = {ga: [10, 21, 30], gb: [12, 20]}
    scores = np.ones(analysis.num_units)
    units = {g.id: g.units for g in analysis.prunable_groups()}
    seen: list[tuple[int, int]] = []

    def measure(keep: np.ndarray) -> float:
        seen.append((int(keep[units[ga]].sum()), int(keep[units[gb]].sum())))
        return float(keep.sum())

    base = float(analysis.num_units)
    res = hilp_search(analysis, scores, _CountCost(), measure, 1.0, base, align=8, edges=edges, max_steps=4,
                      step_fraction=0)
    kept_a = {a for a, _ in seen}
    kept_b = {b for _, b in seen}
    # edges first, then multiples of 8 below the last edge (one channel at a time below 8)
    assert {a for a in kept_a if a >= 8} <= {30, 21, 10, 8} and 21 in kept_a
    assert {b for b in kept_b if b >= 8} <= {20, 12, 8}
    assert not res.reached


# --- auto on a real LUT --------------------------------------------------------------------------
def test_auto_alignment_from_a_real_ort_cpu_lut(tmp_path: Path) -> None:
    """Structure only: timings on a shared machine are noise; no wall-clock value is asserted."""
    from hwprune_fx.targets import TimingConfig, create_backend

    _, analysis, channels = _setup(_net(tmp_path, 24, 16))
    backend = create_backend("ort-cpu", timing=TimingConfig(warmup=1, repeat=3, threads=1),
                             cache_dir=tmp_path / "cache")
    lut = LutCostModel.profile(channels, backend, counts=lambda full, axis: staircase_counts(full, axis, span=16))
    sizes = _sizes(analysis)
    align, edges = resolve_alignment("auto", lut, analysis)
    assert set(align) == set(sizes) == set(edges)
    for g, w in align.items():
        assert isinstance(w, int) and 1 <= w <= max(sizes[g], 8)
        assert edges[g] == sorted(edges[g]) and edges[g][-1] == sizes[g]
        assert all(1 <= e <= sizes[g] for e in edges[g])


@pytest.mark.parametrize("search", ["opti-cut", "hilp"])
def test_scores_on_one_scale_are_compared_across_groups_as_they_are(tmp_path: Path, search: str) -> None:
    """Group A's scores are all 1000x smaller than group B's. Normalised per group (weight norms,
    whose scale is the layer's), both groups look alike and both get cut; on one global scale
    (information gain, Taylor) every cut goes to A."""
    _, analysis, channels = _setup(_net(tmp_path, 32, 32))
    ga, gb = sorted(_sizes(analysis))
    units = {g.id: g.units for g in analysis.prunable_groups()}
    rng = np.random.default_rng(0)
    scores = np.zeros(analysis.num_units)
    scores[units[ga]] = 1e-3 * rng.uniform(1, 2, units[ga].size)
    scores[units[gb]] = rng.uniform(1, 2, units[gb].size)
    base = float(analysis.num_units)

    def run(normalize: bool) -> dict[int, int]:
        measure = lambda k: float(k.sum())  # noqa: E731
        if search == "hilp":
            res = hilp_search(analysis, scores, _CountCost(), measure, base - 16, base, align=8, normalize=normalize)
        else:   # 16 of 32: within the share of a group Opti-Cut takes before it looks elsewhere
            res = opti_cut(analysis, scores, _CountCost(), channels, measure, base - 16, base, align=8,
                           normalize=normalize)
        assert res.reached
        return {g: int((~res.keep[u]).sum()) for g, u in units.items()}

    global_cut, normalized_cut = run(False), run(True)
    assert global_cut[gb] == 0 and global_cut[ga] >= 16
    assert normalized_cut[ga] > 0 and normalized_cut[gb] > 0


def test_data_criteria_declare_one_global_scale() -> None:
    from hwprune_fx.criteria import create_criterion, global_scale
    from hwprune_fx.criteria.information_gain import InformationGainCriterion
    from hwprune_fx.criteria.taylor import TaylorCriterion

    assert global_scale(InformationGainCriterion) and global_scale(TaylorCriterion)
    assert not any(global_scale(create_criterion(n)) for n in ("l1", "l2", "bn", "random"))


class _HalfCost(_CountCost):
    """Predicts half of each cut's real saving: Opti-Cut over-cuts before its first measurement."""

    def delta(self, keep: np.ndarray, remove: np.ndarray) -> float:
        return 0.5 * super().delta(keep, remove)


def _over_cut_case(tmp_path: Path):
    """Two 64-channel groups, random scores, latency = kept channels, budget 24 under it."""
    _, analysis, channels = _setup(_net(tmp_path, 64, 64))
    base = float(analysis.num_units)
    return analysis, channels, np.random.default_rng(0).random(analysis.num_units), base, base - 24


def test_opti_cut_gives_back_over_cut_chunks_and_confirms_what_it_settles_on(tmp_path: Path) -> None:
    analysis, channels, scores, base, budget = _over_cut_case(tmp_path)
    truth = lambda k: float(k.sum())  # noqa: E731
    res = opti_cut(analysis, scores, _HalfCost(), channels, truth, budget, base, align=8)
    # the first measurement was ~48 under the baseline; chunks came back until it used the budget
    assert res.reached and 0.95 * budget <= truth(res.keep) <= budget
    assert any(np.isnan(h.predicted_ms) for h in res.history)   # give-back probes are in the history

    # a probe that flatters (6 ms too fast) picks a network the real measurement rejects: the
    # first network measured within the budget stands
    first = opti_cut(analysis, scores, _HalfCost(), channels, truth, budget, base, align=8, fill=0.0)
    flattered = opti_cut(analysis, scores, _HalfCost(), channels, truth, budget, base, align=8,
                         probe=lambda k: truth(k) - 6)
    assert truth(flattered.keep) <= budget
    assert flattered.measured_ms == truth(flattered.keep)
    assert np.array_equal(flattered.keep, first.keep) or truth(flattered.keep) > truth(first.keep)


def test_opti_cut_confirms_once_per_stop_and_cuts_on_when_the_confirmation_fails(tmp_path: Path) -> None:
    analysis, channels, scores, base, budget = _over_cut_case(tmp_path)
    truth = lambda k: float(k.sum())  # noqa: E731
    confirmed: list[float] = []

    def measure(keep: np.ndarray) -> float:
        confirmed.append(truth(keep))
        return confirmed[-1]

    # the cheap model over-cuts, the give-back settles: only the network it settles on is confirmed
    res = opti_cut(analysis, scores, _HalfCost(), channels, measure, budget, base, align=8, probe=truth)
    assert res.reached and confirmed == [truth(res.keep)] and 0.95 * budget <= confirmed[0] <= budget

    # probes that flatter by 30, checked after every chunk, no give-back: each confirmation fails
    # until the search has cut far enough for the real measurement
    confirmed.clear()
    res = opti_cut(analysis, scores, _CountCost(), channels, measure, budget, base, align=8, fill=0.0,
                   measure_every=1, probe=lambda k: truth(k) - 30)
    assert res.reached and res.measured_ms == truth(res.keep) <= budget
    assert len(confirmed) >= 2 and all(c > budget for c in confirmed[:-1])


def test_opti_cut_asks_the_hardware_before_it_gives_up_when_one_reading_stalled_the_estimate(tmp_path: Path) -> None:
    analysis, channels, scores, base, _ = _over_cut_case(tmp_path)
    budget = base - 60
    readings: list[float] = []

    def measure(keep: np.ndarray) -> float:
        # the first reading comes out next to the baseline (a noisy one); the rest are the truth
        readings.append(base - 1 if not readings else float(keep.sum()))
        return readings[-1]

    # that reading rescales the estimate so far down that it never falls 10% again, nor to the
    # budget: every chunk goes without a measurement, and before the fix the search gave up
    # with "not reached" at the noisy reading
    res = opti_cut(analysis, scores, _CountCost(), channels, measure, budget, base, align=8, recalibrate_every=0.10)
    assert res.reached and res.measured_ms == float(res.keep.sum()) <= budget
    assert len(readings) > 2 and readings[0] == base - 1
    # and the give-back brought it back near the budget, not left at one channel per group
    assert res.measured_ms >= 0.9 * budget


def test_hilp_steps_past_several_edges_far_from_the_budget_and_one_edge_near_it(tmp_path: Path) -> None:
    _, analysis, _ = _setup(_net(tmp_path, 64, 64))
    units = {g.id: g.units for g in analysis.prunable_groups()}
    scores = np.random.default_rng(1).random(analysis.num_units)
    base = float(analysis.num_units)
    budget = base - 72
    seen: list[dict[int, int]] = []

    def measure(keep: np.ndarray) -> float:
        seen.append({g: int(keep[u].sum()) for g, u in units.items()})
        return float(keep.sum())

    one_edge = hilp_search(analysis, scores, _CountCost(), measure, budget, base, align=8, step_fraction=0)
    stepped = hilp_search(analysis, scores, _CountCost(), measure, budget, base, align=8)
    assert one_edge.reached and stepped.reached and measure(stepped.keep) <= budget
    assert len(stepped.history) < len(one_edge.history)
    # every kept count is still on an edge (a multiple of 8 here), and the last step (near the
    # budget) cut at most one edge: at most 8 channels
    assert all(n % 8 == 0 for kept in seen for n in kept.values())
    removed_last = int((~stepped.keep).sum()) - stepped.history[-2].removed_units
    assert 0 < removed_last <= 8


class _TenthCost(_CountCost):
    """Each channel estimated at a tenth of what it measures: every edge looks too small to matter."""

    def delta(self, keep: np.ndarray, remove: np.ndarray) -> float:
        return 0.1 * super().delta(keep, remove)


def test_hilp_does_not_cut_half_a_group_in_one_step_however_little_each_edge_saves(tmp_path: Path) -> None:
    _, analysis, _ = _setup(_net(tmp_path, 64, 64))
    units = {g.id: g.units for g in analysis.prunable_groups()}
    scores = np.random.default_rng(1).random(analysis.num_units)
    base = float(analysis.num_units)

    def first_step_widths(**kw) -> list[dict[int, int]]:
        seen: list[dict[int, int]] = []

        def measure(keep: np.ndarray) -> float:
            seen.append({g: int(keep[u].sum()) for g, u in units.items()})
            return float(keep.sum())
        hilp_search(analysis, scores, _TenthCost(), measure, base - 100, base, align=8, max_steps=1, **kw)
        return seen

    # far from the budget, the estimate never reaches a quarter of the distance: without the cap
    # a candidate takes its group edge by edge down to one channel
    assert min(min(w.values()) for w in first_step_widths(max_group_cut=1.0)) == 1
    # with it, every candidate of the first step keeps at least half of each group
    capped = first_step_widths()
    assert capped and all(n >= 32 for w in capped for n in w.values())
    assert any(n == 32 for w in capped for n in w.values())   # and does go that far


def test_ratio_plan_rounds_kept_widths_up_to_the_multiple(tmp_path: Path) -> None:
    from hwprune_fx.plan import plan_by_ratio

    _, analysis, _ = _setup(_net(tmp_path, 30, 20))
    sizes = _sizes(analysis)
    scores = np.random.default_rng(1).random(analysis.num_units)
    for ratio in (0.1, 0.3, 0.5, 0.8):
        plain, rounded = plan_by_ratio(analysis, scores, ratio), plan_by_ratio(analysis, scores, ratio, round_to=8)
        plain_kept, kept = _after(plain), _after(rounded)
        for g, size in sizes.items():
            assert kept[g] % 8 == 0 or kept[g] == size          # a multiple, or left whole
            assert plain_kept[g] <= kept[g] < plain_kept[g] + 8   # rounded up, never down
            # the rounded plan removes a prefix of the plain plan's order: the least important go first
            assert set(np.flatnonzero(~_keep(analysis, rounded))) <= set(np.flatnonzero(~_keep(analysis, plain)))
    with pytest.raises(UserError):
        plan_by_ratio(analysis, scores, 0.5, round_to=0)


def _after(plan) -> dict[int, int]:
    return {g["group"]: g["after"] for g in plan.group_sizes()}


def _keep(analysis, plan) -> np.ndarray:
    keep = np.ones(analysis.num_units, bool)
    keep[plan.removed_units] = False
    return keep


def test_uniform_search_keeps_aligned_widths_and_times_each_network_once(tmp_path: Path) -> None:
    from hwprune_fx.search.uniform import uniform_search

    _, analysis, _ = _setup(_net(tmp_path, 30, 20))
    scores = np.random.default_rng(2).random(analysis.num_units)
    timed: list[bytes] = []

    def measure(keep: np.ndarray) -> float:
        timed.append(np.packbits(keep).tobytes())
        for g in analysis.prunable_groups():
            assert keep[g.units].sum() % 8 == 0 or keep[g.units].all()
        return float(keep.sum())

    base = float(analysis.num_units)
    res = uniform_search(analysis, scores, measure, base - 12, base, round_to=8)
    assert res.reached and res.measured_ms <= base - 12
    assert len(timed) == len(set(timed))   # nearby ratios that round to one network: timed once
    assert len(timed) < 8                  # ... so fewer timings than the 8 bisection steps


@pytest.mark.parametrize("recheck_agrees", [True, False])
def test_uniform_search_times_a_suspect_failure_again(tmp_path: Path, recheck_agrees: bool) -> None:
    """One reading over the budget that the others contradict sends a plain bisection to a far
    more pruned network; timed again, the suspect is taken when it now meets the budget."""
    from hwprune_fx.search.uniform import uniform_search

    _, analysis, _ = _setup(_net(tmp_path, 30, 20))
    scores = np.random.default_rng(2).random(analysis.num_units)
    base, budget = float(analysis.num_units), float(analysis.num_units) - 12
    lied: list[bytes] = []

    def measure(keep: np.ndarray) -> float:   # latency = kept units; the first near-budget network reads slow
        if 0.95 * budget < keep.sum() <= budget and not lied:
            lied.append(np.packbits(keep).tobytes())
            return base
        return float(keep.sum())

    rechecked: list[bytes] = []

    def recheck(keep: np.ndarray) -> float:
        rechecked.append(np.packbits(keep).tobytes())
        return float(keep.sum()) if recheck_agrees else base

    plain = uniform_search(analysis, scores, measure, budget, base)
    lied.clear()
    res = uniform_search(analysis, scores, measure, budget, base, recheck=recheck)
    assert plain.reached and plain.measured_ms < 0.95 * budget   # the lie cost the plain bisection
    assert rechecked == lied                                    # the suspect, timed once more
    # the timing that accepted the result is in the search's steps (the report lists them)
    assert res.measured_ms in [step.measured_ms for step in res.history]
    if recheck_agrees:
        assert 0.95 * budget < res.measured_ms <= budget and res.keep.sum() == res.measured_ms
    else:
        assert res.measured_ms == plain.measured_ms and np.array_equal(res.keep, plain.keep)


def test_opti_cut_recalibrates_on_the_way_down_and_needs_no_give_back(tmp_path: Path) -> None:
    """A cheap model that reads half of each saving: without interval measurements the first
    check comes ~48 channels too deep and the give-back undoes chunks; measuring every 10% of
    the baseline rescales the model on the way and the search stops near the budget itself."""
    analysis, channels, scores, base, budget = _over_cut_case(tmp_path)
    truth = lambda k: float(k.sum())  # noqa: E731
    plain = opti_cut(analysis, scores, _HalfCost(), channels, truth, budget, base, align=8)
    assert any(np.isnan(h.predicted_ms) for h in plain.history)   # it had to give back
    res = opti_cut(analysis, scores, _HalfCost(), channels, truth, budget, base, align=8, recalibrate_every=0.05)
    checks = [h for h in res.history if h.measured_ms is not None and h.step > 0]
    assert res.reached and 0.95 * budget <= truth(res.keep) <= budget
    assert not any(np.isnan(h.predicted_ms) for h in res.history)  # no give-back probes
    # the first check came when the estimate had fallen 5% of the baseline, above the budget
    assert checks[0].measured_ms > budget and checks[0].predicted_ms <= base * 0.95
