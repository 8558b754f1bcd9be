"""Pass infrastructure: honest ``modified``, fixed points, failing passes named, instruments."""
from __future__ import annotations

import numpy as np
import pytest

from hwprune_fx.pass_infra import PassBase, PassError, PassManager, PassResult, TimingInstrument, VerifyInstrument


class Increment(PassBase):
    """Adds one to a counter until it reaches ``limit``."""

    name = "increment"

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def call(self, model: dict) -> PassResult:
        if model["n"] >= self.limit:
            return PassResult(model, False)
        model["n"] += 1
        return PassResult(model, True)


class Broken(PassBase):
    name = "broken"

    def call(self, model: dict) -> PassResult:
        raise ValueError("boom")


class LiesAboutInPlace(PassBase):
    name = "liar"
    in_place = True

    def call(self, model: dict) -> PassResult:
        return PassResult(dict(model), True)


def test_fixed_point_repeats_until_nothing_changes() -> None:
    result = PassManager([Increment(3)], steps=10)({"n": 0})
    assert result.model["n"] == 3 and result.modified


def test_single_step_runs_once() -> None:
    assert PassManager([Increment(3)])({"n": 0}).model["n"] == 1


def test_unmodified_is_reported() -> None:
    assert not PassManager([Increment(0)], steps=5)({"n": 0}).modified


def test_failing_pass_is_named_with_its_predecessors() -> None:
    with pytest.raises(PassError, match=r"'broken' failed .*boom.*increment"):
        PassManager([Increment(5), Broken()])({"n": 0})


def test_in_place_claim_is_checked() -> None:
    with pytest.raises(PassError, match="in place"):
        LiesAboutInPlace()({"n": 0})


def test_instruments_see_every_pass() -> None:
    timing = TimingInstrument()
    seen: list[int] = []
    PassManager([Increment(2), Increment(2)], steps=5,
                instruments=[timing, VerifyInstrument(lambda m: seen.append(m["n"]))])({"n": 0})
    assert [r[0] for r in timing.records] == ["increment"] * len(timing.records)
    assert [r[2] for r in timing.records][-2:] == [False, False]
    assert seen[-1] == 2 and len(seen) == len(timing.records)


def test_prune_pass_with_empty_plan_reports_no_change(tmp_path) -> None:
    from hwprune_fx.analysis import analyze_dependencies
    from hwprune_fx.passes import PruneChannelsPass
    from hwprune_fx.pipeline import load_onnx_model
    from hwprune_fx.plan import PruningPlan
    from tests import onnx_builders as B

    loaded = load_onnx_model(B.export(B.Residual(), (1, 3, 8, 8), tmp_path / "m.onnx"))
    plan = PruningPlan(analyze_dependencies(loaded.channel_graph), np.zeros(0, np.int64))
    assert not PruneChannelsPass(plan)(loaded.graph).modified


def test_plan_refuses_pinned_units(tmp_path) -> None:
    from hwprune_fx.analysis import analyze_dependencies
    from hwprune_fx.pipeline import load_onnx_model
    from hwprune_fx.plan import PruningPlan
    from tests import onnx_builders as B

    loaded = load_onnx_model(B.export(B.Residual(), (1, 3, 8, 8), tmp_path / "m.onnx"))
    a = analyze_dependencies(loaded.channel_graph)
    with pytest.raises(ValueError, match="pinned"):
        PruningPlan(a, np.flatnonzero(a.unit_pinned)[:1])
