"""Opti-Cut's cap on the share of a group it cuts before it looks elsewhere (``max_group_cut``).

Two 32-channel groups with equal scores; every channel of group B saves ten times what one of
group A saves. Uncapped, the greedy takes B down to its last chunk before A gives anything:
the collapse of a whole layer that cost the quality benchmark's ResNet most of its accuracy.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hwprune_fx.search.opti_cut import CAP_STEP, MAX_GROUP_CUT, opti_cut
from tests.test_alignment import _net, _setup


class _WeightedCost:
    """Latency = the kept units' weights (a cost model whose savings differ per group)."""

    name = "weighted"

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = weights

    def predict(self, keep: np.ndarray) -> float:
        return float(self.weights[keep].sum())

    def delta(self, keep: np.ndarray, remove: np.ndarray) -> float:
        return -float((self.weights[remove] * keep[remove]).sum())


def _run(tmp_path: Path, saved: float, size: int = 32, **options) -> tuple[dict[str, int], bool]:
    """Channels cut from group A (cheap) and B (ten times the saving) of ``size`` channels each
    to save ``saved``."""
    _, analysis, channels = _setup(_net(tmp_path, size, size))
    ga, gb = sorted(analysis.prunable_groups(), key=lambda g: g.id)
    weights = np.zeros(analysis.num_units)
    weights[ga.units], weights[gb.units] = 1.0, 10.0
    cost = _WeightedCost(weights)
    base = cost.predict(np.ones(analysis.num_units, bool))
    scores = np.ones(analysis.num_units)
    options.setdefault("normalize", False)
    res = opti_cut(analysis, scores, cost, channels, cost.predict, base - saved, base, align=8, **options)
    return {"a": int((~res.keep[ga.units]).sum()), "b": int((~res.keep[gb.units]).sum())}, res.reached


def test_the_default_cap_is_half_a_group() -> None:
    assert MAX_GROUP_CUT == 0.5


def test_uncapped_greedy_empties_the_cheapest_group_first(tmp_path: Path) -> None:
    cut, reached = _run(tmp_path, 176.0, max_group_cut=1.0)
    assert reached and cut == {"a": 0, "b": 24}


def test_a_group_gives_half_before_the_others_give_anything_more(tmp_path: Path) -> None:
    # B's half saves 160, A's half the other 16: B's third chunk waits although it is cheaper
    cut, reached = _run(tmp_path, 176.0)
    assert reached and cut == {"a": 16, "b": 16}


def test_past_every_groups_half_the_share_rises_until_a_chunk_fits(tmp_path: Path) -> None:
    # both halves save 176; at 62.5% (20 of 32) no chunk of 8 fits, at 75% B's third chunk does
    cut, reached = _run(tmp_path, 256.0)
    assert reached and cut == {"a": 16, "b": 24}


@pytest.mark.parametrize("normalize, expected", [(True, {"a": 40, "b": 48}), (False, {"a": 32, "b": 48})])
def test_past_every_groups_half_per_group_scores_raise_the_share_by_an_eighth(
        tmp_path: Path, normalize: bool, expected: dict[str, int]) -> None:
    # 64 channels: both halves save 352. Per-group scores (l1): at 62.5% (40 of 64) B gives a
    # chunk (80) and A one (8), and only at 75% does B give another (80). Scores on one scale
    # (ig): the share goes to 75% at once and B gives both chunks, A none.
    assert CAP_STEP == 0.125
    cut, reached = _run(tmp_path, 512.0, size=64, normalize=normalize)
    assert reached and cut == expected


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("saved", [300.0, 341.0])
def test_a_budget_past_the_raised_shares_is_still_reached(tmp_path: Path, saved: float, normalize: bool) -> None:
    # 341 = every channel but one per group: the share rises until the last chunks fit
    cut, reached = _run(tmp_path, saved, normalize=normalize)
    assert reached and cut["b"] >= 24
    if saved == 341.0:
        assert cut == {"a": 31, "b": 31}


@pytest.mark.parametrize("args", [["--max-group-cut", "0%"], ["--max-group-cut", "120%"], ["--max-group-cut", "half"],
                                  ["--max-group-cut", "30%", "--search", "hilp"],
                                  ["--max-group-cut", "30%", "--search", "uniform"]])
def test_a_bad_or_misplaced_max_group_cut_is_a_usage_error(tmp_path: Path, args: list[str]) -> None:
    from tests.test_prune_budget import run_cli

    out = tmp_path / "p.onnx"
    res = run_cli("prune", str(tmp_path / "absent.onnx"), "--budget", "60%", *args, "-o", str(out))
    assert res.returncode == 2 and "--max-group-cut" in res.stderr and "Traceback" not in res.stderr
    assert not out.exists()


def test_the_api_refuses_a_share_outside_zero_to_one(tmp_path: Path) -> None:
    from hwprune_fx.errors import UserError
    from hwprune_fx.prune_budget import prune_to_budget

    with pytest.raises(UserError, match="max_group_cut"):
        prune_to_budget(_net(tmp_path, 16, 16), "60%", max_group_cut=1.5, cache_dir=tmp_path)
