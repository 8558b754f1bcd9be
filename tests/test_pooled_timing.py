"""Pooled timing: one model's rounds are spread over the whole pool, so a slow spell cannot catch all of them.

A scripted backend stands in for the clock: each model has a true time; a "spell" slows one
model's blocks for a run of consecutive blocks (as a busy neighbour slows a memory-bound
variant for a second or two while the reference barely moves).
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from hwprune_fx.targets.base import Backend
from hwprune_fx.targets.measurement import summarize
from hwprune_fx.targets.side_by_side import pooled_ratios, round_medians

TRUE_MS = {"reference": 10.0, "a": 8.0, "b": 12.0, "c": 9.0, "d": 11.0}


def named_model(name: str) -> onnx.ModelProto:
    return helper.make_model(helper.make_graph([], name, [], []))


class SpellBackend(Backend):
    """Blocks read their model's true time, except that a spell of ``spell`` consecutive blocks
    (over all models), starting at ``victim``'s first block, reads 1.3 times slower for
    ``victim``. Every ``block_timer`` call counts as a new session."""

    name = "scripted"

    def __init__(self, victim: str = "", spell: int = 0, **kw) -> None:
        super().__init__(**kw)
        self.victim, self.spell = victim, spell
        self.spell_start: int | None = None
        self.calls: list[str] = []
        self.sessions: list[str] = []

    def _time_onnx(self, model, feeds):
        raise AssertionError("pooled timing goes through block timers")

    def block_timer(self, model, feeds):
        name = model.graph.name
        self.sessions.append(name)

        def block():
            if name == self.victim and self.spell_start is None:
                self.spell_start = len(self.calls)
            slow = name == self.victim and len(self.calls) - self.spell_start < self.spell
            self.calls.append(name)
            return summarize(self.name, [TRUE_MS[name] * (1.3 if slow else 1.0)], 0, 1, {})
        return block


MODELS = [named_model(n) for n in "abcd"]


def test_a_reference_block_precedes_every_model_block_and_rounds_go_through_the_pool() -> None:
    backend = SpellBackend()
    ratios, reference = pooled_ratios(backend, named_model("reference"), MODELS, rounds=2, passes=3, feeds={})
    one_round = ["reference", "a", "reference", "b", "reference", "c", "reference", "d"]
    assert backend.calls == one_round * 2 * 3
    # every pass builds fresh sessions: the reference's and each model's
    assert backend.sessions == ["reference", "a", "b", "c", "d"] * 3
    assert [len(r) for r in ratios] == [6] * 4 and len(reference) == 24
    assert [float(np.median(r)) for r in ratios] == pytest.approx([0.8, 1.2, 0.9, 1.1])


def test_a_spell_over_one_models_rounds_does_not_move_its_pooled_ratio() -> None:
    rounds = 5
    # the spell lasts as long as all of model b's rounds taken together, beside the reference
    spell = 2 * rounds
    pooled = SpellBackend(victim="b", spell=spell)
    ratios, _ = pooled_ratios(pooled, named_model("reference"), MODELS, rounds=rounds, feeds={})
    assert float(np.median(ratios[1])) == pytest.approx(1.2)

    # the same spell when b is timed on its own, all its rounds together: every round is caught
    alone = SpellBackend(victim="b", spell=spell)
    (_, b_ms), _ = round_medians(alone, [named_model("reference"), MODELS[1]], rounds, feeds=[{}, {}])
    assert float(np.median(np.array(b_ms) / 10.0)) == pytest.approx(1.2 * 1.3)


def test_rounds_and_passes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rounds and passes"):
        pooled_ratios(SpellBackend(), named_model("reference"), MODELS, rounds=0, feeds={})


def test_fast_networks_get_more_rounds_until_each_has_run_for_the_given_seconds() -> None:
    """Rounds go on until the networks' timed runs add up to ``seconds_per_model`` each (here
    10 + 8 ms a round against 2 x 50 ms: 6 rounds), never fewer than asked, never past the cap."""
    pair = [named_model("reference"), MODELS[0]]
    (ref, _), _ = round_medians(SpellBackend(), pair, 2, feeds=[{}, {}], seconds_per_model=0.05)
    assert len(ref) == 6
    (ref, _), _ = round_medians(SpellBackend(), pair, 2, feeds=[{}, {}], seconds_per_model=0.05, max_rounds=4)
    assert len(ref) == 4
    (ref, _), _ = round_medians(SpellBackend(), pair, 3, feeds=[{}, {}])
    assert len(ref) == 3
    (ref, _), _ = round_medians(SpellBackend(), pair, 8, feeds=[{}, {}], seconds_per_model=0.05)
    assert len(ref) == 8


def test_the_medians_standard_error_shrinks_with_rounds_where_the_spread_does_not() -> None:
    """The same noise over 4 and over 16 rounds: the spread (p90 - p10) stays, the standard error
    of the median (sqrt(pi/2) sd / sqrt(n)) halves."""
    noise = [9.0, 10.0, 11.0, 10.0]
    few, many = summarize("x", noise, 0, 1), summarize("x", noise * 4, 0, 1)
    assert few.median_se_ms == pytest.approx(1.2533 * float(np.std(noise, ddof=1)) / 2)
    assert many.median_se_ms == pytest.approx(few.median_se_ms / 2, rel=0.15)
    assert many.spread_ms >= few.spread_ms
    assert summarize("x", [10.0], 0, 1).median_se_ms == 0.0
