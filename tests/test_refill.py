"""A first network that the final check reads well under the budget: one more search, aiming higher."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hwprune_fx.search.final_check import FinalCheck
from hwprune_fx.search.refill import CEILING, UNDERFILL, raised_aim
from hwprune_fx.targets.measurement import summarize


def check_at(ratio: float, base_ms: float = 20.0) -> FinalCheck:
    """A final check reading the pruned network at ``ratio`` of an original at ``base_ms``."""
    return FinalCheck(summarize("ort-cpu", [base_ms], 0, 1), summarize("ort-cpu", [ratio * base_ms], 0, 1),
                      (ratio,) * 3)


def test_the_aim_rises_by_how_much_faster_the_final_check_read_the_network() -> None:
    # budget 10 ms (50% of 20 ms), aimed at 9.7; the search read its network at 9.5 ms, the final
    # check at 0.40 of the original (80% of the budget): 9.7 x (9.5 / 20) / 0.40 = 11.5, capped at
    # CEILING of the budget (the final check's half spread needs room above a network at the aim)
    assert CEILING < 1.0
    assert raised_aim(9.7, 10.0, 9.5, 20.0, check_at(0.40), 10.0) == pytest.approx(CEILING * 10.0)
    # a smaller disagreement raises it less, under the budget: 9.0 x (8.4 / 20) / 0.40 = 9.45
    assert raised_aim(9.0, 10.0, 8.4, 20.0, check_at(0.40), 10.0) == pytest.approx(9.0 * 0.42 / 0.40)


def test_no_second_search_when_the_search_read_the_network_as_low_as_the_final_check() -> None:
    """A uniform ratio between two steps of the staircase: the search's own timing is as far
    under the aim as the final check, so a higher aim finds the same network."""
    assert raised_aim(9.7, 10.0, 7.2, 20.0, check_at(0.36), 10.0) is None
    assert raised_aim(9.7, 10.0, 7.25, 20.0, check_at(0.36), 10.0) is None   # under MIN_RAISE


def test_a_fuller_network_the_search_timed_in_the_margin_raises_the_aim_to_the_ceiling() -> None:
    """The staircase put the next network between the aim and the budget: the search read its
    own network as low as the final check did, yet the fuller one is worth a final check."""
    assert raised_aim(9.7, 10.0, 7.2, 20.0, check_at(0.36), 10.0, fuller_ms=9.8) == pytest.approx(CEILING * 10.0)
    assert raised_aim(9.7, 10.0, 7.2, 20.0, check_at(0.36), 10.0, fuller_ms=CEILING * 10.0) == pytest.approx(
        CEILING * 10.0)


def test_a_fuller_network_over_the_ceiling_or_under_the_aim_changes_nothing() -> None:
    assert raised_aim(9.7, 10.0, 7.2, 20.0, check_at(0.36), 10.0, fuller_ms=10.1) is None
    assert raised_aim(9.7, 10.0, 7.2, 20.0, check_at(0.36), 10.0, fuller_ms=9.6) is None
    # and a first network at the underfill line or over searches no more, whatever the search saw
    assert raised_aim(9.7, 10.0, 9.6, 20.0, check_at(UNDERFILL * 0.5), 10.0, fuller_ms=9.8) is None


def test_no_second_search_at_or_over_the_underfill_line() -> None:
    assert raised_aim(9.7, 10.0, 9.6, 20.0, check_at(UNDERFILL * 0.5), 10.0) is None


def _scripted_final_checks(monkeypatch, ratios_of_budget: list[float]) -> list[float]:
    """The final checks read the pruned network at the given shares of a 70% budget, in turn
    (their pairs agreeing); the readings are returned as they are made."""
    from hwprune_fx import prune_budget

    real, made = prune_budget.final_check, []

    def fake(backend, original, pruned, **kw):
        check = real(backend, original, pruned, **kw)
        share = ratios_of_budget[len(made)]
        made.append(share)
        ratio = 0.70 * share
        final = dataclasses.replace(check.final, median_ms=ratio * check.base.median_ms)
        return dataclasses.replace(check, final=final, ratios=(ratio,) * len(check.ratios))
    monkeypatch.setattr(prune_budget, "final_check", fake)
    return made


def _scripted_searches(monkeypatch, second: str) -> list:
    """The first search runs for real, and is taken to have read its network at its aim (so
    the final check's 0.70 is far under what the search saw, whatever this machine's
    timings). The search aiming higher returns, for ``second`` = "fuller", the first network
    with one of its cut groups kept whole: a different, fuller network; for "same", the first
    network again. Left alone, a search on this small network may or may not find another."""
    from hwprune_fx import prune_budget

    real, found = prune_budget._search, []

    def search(*args, **kw):
        if not found:
            first = real(*args, **kw)
            found.append(dataclasses.replace(first, measured_ms=args[6]))   # args[6]: the aim (ms)
        elif second == "same":
            found.append(found[0])
        else:
            first, analysis = found[0], args[1]
            keep = first.keep.copy()
            cut = next(g for g in analysis.prunable_groups() if not keep[g.units].all())
            keep[cut.units] = True
            found.append(dataclasses.replace(first, keep=keep))
        return found[-1]
    monkeypatch.setattr(prune_budget, "_search", search)
    return found


@pytest.fixture(scope="module")
def r18(torchvision_onnx) -> Path:
    return torchvision_onnx("resnet18", 64)


def test_an_underfilled_network_is_replaced_by_the_fuller_one_aimed_higher(r18: Path, tmp_path: Path,
                                                                           monkeypatch) -> None:
    from hwprune_fx.prune_budget import prune_to_budget

    made = _scripted_final_checks(monkeypatch, [0.70, 0.96])
    found = _scripted_searches(monkeypatch, "fuller")
    out = prune_to_budget(r18, "70%", search="opti-cut", repeat=6, cache_dir=tmp_path)
    rep = out["report"]
    assert made == [0.70, 0.96] and len(found) == 2
    first, second = rep["attempts"]
    assert (first["why"], second["why"]) == ("first", "aim higher")
    assert first["aim_ms"] < second["aim_ms"] <= rep["budget_ms"]
    assert rep["kept_attempt"] == 2 and rep["aim_ms"] == second["aim_ms"] and rep["searches"] == 2
    assert rep["budget_used"] == pytest.approx(0.96) and rep["reached"]
    # the network written is the second search's, which removed fewer channels than the first
    assert rep["search_measured_ms"] <= second["aim_ms"]
    assert rep["removed_units"] == second["removed_units"] < first["removed_units"]


def test_the_first_network_stays_when_the_one_aimed_higher_fails_its_check(r18: Path, tmp_path: Path,
                                                                            monkeypatch) -> None:
    from hwprune_fx.prune_budget import prune_to_budget

    made = _scripted_final_checks(monkeypatch, [0.70, 1.02])
    found = _scripted_searches(monkeypatch, "fuller")
    rep = prune_to_budget(r18, "70%", search="opti-cut", repeat=6, cache_dir=tmp_path)["report"]
    assert made == [0.70, 1.02] and len(found) == 2 and len(rep["attempts"]) == 2
    assert rep["kept_attempt"] == 1 and rep["aim_ms"] == rep["attempts"][0]["aim_ms"] and rep["searches"] == 2
    assert rep["budget_used"] == pytest.approx(0.70) and rep["reached"]
    assert rep["search_measured_ms"] <= rep["attempts"][0]["aim_ms"]
    assert rep["removed_units"] == rep["attempts"][0]["removed_units"] > rep["attempts"][1]["removed_units"]


def test_a_search_aiming_higher_that_finds_the_same_network_is_not_checked_again(r18: Path, tmp_path: Path,
                                                                                  monkeypatch) -> None:
    from hwprune_fx import prune_budget

    made = _scripted_final_checks(monkeypatch, [0.70, 0.96])
    found = _scripted_searches(monkeypatch, "same")
    rep = prune_budget.prune_to_budget(r18, "70%", search="uniform", repeat=6, cache_dir=tmp_path)["report"]
    assert len(found) == 2 and made == [0.70]          # two searches, one final check
    assert rep["searches"] == 2 and len(rep["attempts"]) == 1 and rep["kept_attempt"] == 1
    assert rep["budget_used"] == pytest.approx(0.70) and rep["reached"]


def test_a_fuller_network_timed_inside_the_margin_is_searched_for_again(r18: Path, tmp_path: Path,
                                                                        monkeypatch) -> None:
    """The first search read its own network as low as the final check (no disagreement to
    correct), but timed a fuller one between its aim and the budget: the second search aims at
    the ceiling, and its network is kept when it passes fuller."""
    from hwprune_fx import prune_budget
    from hwprune_fx.search.opti_cut import SearchStep

    made = _scripted_final_checks(monkeypatch, [0.70, 0.96])
    real, found = prune_budget._search, []

    def search(*args, **kw):
        aim_ms, baseline_ms = args[6], args[7]
        if not found:
            first = real(*args, **kw)
            inside = SearchStep(len(first.history), 0, float("nan"), aim_ms * 1.01)
            found.append(dataclasses.replace(first, measured_ms=0.70 * 0.70 * baseline_ms,
                                             history=[*first.history, inside]))
        else:
            keep = found[0].keep.copy()
            cut = next(g for g in args[1].prunable_groups() if not keep[g.units].all())
            keep[cut.units] = True
            found.append(dataclasses.replace(found[0], keep=keep, measured_ms=aim_ms))
        return found[-1]
    monkeypatch.setattr(prune_budget, "_search", search)
    rep = prune_budget.prune_to_budget(r18, "70%", search="uniform", repeat=6, cache_dir=tmp_path)["report"]
    assert made == [0.70, 0.96] and len(found) == 2
    first, second = rep["attempts"]
    assert second["why"] == "aim higher" and second["aim_ms"] == pytest.approx(CEILING * rep["budget_ms"])
    assert rep["kept_attempt"] == 2 and rep["budget_used"] == pytest.approx(0.96)
