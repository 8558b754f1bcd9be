"""Scoring a partly pruned network, and Opti-Cut re-scoring as it cuts.

A data-driven criterion asked at ``keep`` scores what removing each unit costs *that* network:
checked against the pruned networks themselves, built by the rewrite and run by onnxruntime.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from hwprune_fx.analysis import analyze_dependencies
from hwprune_fx.criteria import create_criterion
from hwprune_fx.criteria.data_driven import divergence, prediction
from hwprune_fx.criteria.information_gain import exact_information_gain
from hwprune_fx.criteria.masked_model import build_masked_model
from hwprune_fx.pipeline import load_onnx_model, materialize
from hwprune_fx.plan import PruningPlan
from hwprune_fx.search.opti_cut import opti_cut
from hwprune_fx.zoo import export_onnx
from tests.test_alignment import _CountCost, _over_cut_case
from tests.test_data_criteria import calibration, small_net

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("rescore") / "small.onnx"
    export_onnx(small_net(), (1, 3, 16, 16), path)
    loaded = load_onnx_model(str(path))
    analysis = analyze_dependencies(loaded.channel_graph)
    free = np.flatnonzero(~analysis.unit_pinned)
    keep = np.ones(analysis.num_units, dtype=bool)
    keep[np.random.default_rng(1).choice(free, free.size // 3, replace=False)] = False
    return loaded, analysis, keep


def _logits(model, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def test_exact_information_gain_at_keep_is_the_kl_between_the_pruned_networks(small) -> None:
    """IG(u | keep) = KL(network without ~keep || network without ~keep and u), both rewritten."""
    loaded, analysis, keep = small
    calib = calibration(6, (3, 16, 16))
    x = calib.samples["input"]
    base = materialize(loaded.original, PruningPlan(analysis, np.flatnonzero(~keep)))
    ref = torch.from_numpy(_logits(base, x))
    units = np.flatnonzero(keep & ~analysis.unit_pinned)[::7]
    got = exact_information_gain(loaded.original, analysis, calib, units, keep=keep)
    for u, ig in zip(units.tolist(), got):
        removed = np.append(np.flatnonzero(~keep), u)
        cut = torch.from_numpy(_logits(materialize(loaded.original, PruningPlan(analysis, removed)), x))
        assert ig == pytest.approx(divergence("categorical", ref, cut) / len(x), rel=1e-3, abs=1e-9)
    # and it is not the original's IG: a third of the network gone changes what each unit costs
    at_original = exact_information_gain(loaded.original, analysis, calib, units)
    assert np.max(np.abs(got - at_original) / np.maximum(at_original, 1e-12)) > 0.2


def test_fisher_information_gain_at_keep_is_the_curvature_of_that_networks_kl(small) -> None:
    """KL(p_keep || p_keep with u's masks at 1 - eps) / eps^2 -> the criterion's score at keep."""
    loaded, analysis, keep = small
    calib = calibration(6, (3, 16, 16))
    fisher = create_criterion("ig", model=loaded.original, calib=calib).score(analysis, keep)
    masked = build_masked_model(loaded.original, analysis)
    batches = list(masked.batches(calib))
    eps = 0.01
    start = masked.at(keep)
    with torch.no_grad():
        refs = [prediction(masked(x, start)) for x in batches]
        for unit in np.flatnonzero(keep & ~analysis.unit_pinned)[::9].tolist():
            gone = keep.copy()
            gone[unit] = False
            masks = [s - eps * (s - m) for s, m in zip(start, masked.at(gone))]
            kl = np.mean([divergence(kind, ref, prediction(masked(x, masks))[1])
                          for x, (kind, ref) in zip(batches, refs)])
            assert kl / eps ** 2 == pytest.approx(fisher[unit], rel=0.05, abs=1e-12)
    # units already removed have nothing left to lose
    assert np.all(fisher[~keep] == 0)


class _RescoreLog:
    """A re-scorer that returns fixed scores and keeps the networks it was asked about."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores
        self.calls: list[np.ndarray] = []

    def __call__(self, keep: np.ndarray) -> np.ndarray:
        self.calls.append(keep.copy())
        return self.scores

    def apart(self, base: float) -> float:
        """The least latency (kept units) fallen between two scorings, the first after the original."""
        kept = [base] + [float(c.sum()) for c in self.calls]
        return min(a - b for a, b in zip(kept, kept[1:]))


def test_opti_cut_reorders_each_groups_remaining_units_by_the_new_scores(tmp_path: Path) -> None:
    """The re-score turns every group's order around: what is cut after it comes from the other end."""
    analysis, channels, scores, base, budget = _over_cut_case(tmp_path)
    truth = lambda k: float(k.sum())  # noqa: E731
    rescore = _RescoreLog(scores.max() + 1.0 - scores)   # most important becomes least
    res = opti_cut(analysis, scores, _CountCost(), channels, truth, budget, base, align=8,
                   recalibrate_every=0.05, rescore=rescore)
    calls = rescore.calls
    assert res.reached and truth(res.keep) <= budget
    assert calls and all(c.sum() > truth(res.keep) for c in calls)
    # measured every 5% of the baseline, re-scored every 10% (the default rescore_every)
    assert rescore.apart(base) >= 0.10 * base
    first = calls[0]
    for g in analysis.prunable_groups():
        units = g.units
        before = units[~first[units]]                    # cut before the re-score: the lowest scores
        after = units[first[units] & ~res.keep[units]]   # cut after it
        lowest = units[np.argsort(scores[units], kind="stable")]
        assert set(before) == set(lowest[:before.size])
        # every re-score says the same: all that went after the first came from the top of the old order
        assert set(after) == set(lowest[::-1][:after.size])
    assert np.any(first & ~res.keep)   # the search did cut after the re-score


def test_opti_cut_without_rescore_keeps_the_starting_order(tmp_path: Path) -> None:
    """The rescore is a choice: without it the order is the one the scores gave at the start."""
    analysis, channels, scores, base, budget = _over_cut_case(tmp_path)
    truth = lambda k: float(k.sum())  # noqa: E731
    res = opti_cut(analysis, scores, _CountCost(), channels, truth, budget, base, align=8, recalibrate_every=0.05)
    for g in analysis.prunable_groups():
        cut = g.units[~res.keep[g.units]]
        lowest = g.units[np.argsort(scores[g.units], kind="stable")]
        assert set(cut) == set(lowest[:cut.size])


def test_hilp_re_scores_once_the_measured_latency_has_fallen_a_tenth(tmp_path: Path) -> None:
    """HILP re-scores after a step that took the latency 10% of the baseline below the last scores."""
    from hwprune_fx.search.hilp import hilp_search

    analysis, _, scores, base, _ = _over_cut_case(tmp_path)
    budget = base - 72
    truth = lambda k: float(k.sum())  # noqa: E731
    rescore = _RescoreLog(scores.max() + 1.0 - scores)
    res = hilp_search(analysis, scores, _CountCost(), truth, budget, base, align=8, step_fraction=0,
                      rescore=rescore, rescore_every=0.10)
    calls = rescore.calls
    assert res.reached and truth(res.keep) <= budget
    # 72 of 128 channels cut in 8-channel steps; a re-score each time 12.8 more have gone
    assert len(calls) >= 3
    assert rescore.apart(base) >= 0.10 * base
    first = calls[0]
    for g in analysis.prunable_groups():
        units = g.units
        lowest = units[np.argsort(scores[units], kind="stable")]
        before, after = units[~first[units]], units[first[units] & ~res.keep[units]]
        assert set(before) == set(lowest[:before.size])
        assert set(after) == set(lowest[::-1][:after.size])


# --- the CLI ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_cli(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("rescore_cli")
    export_onnx(small_net(), (1, 3, 32, 32), d / "small.onnx")
    np.save(d / "calib.npy", np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32))
    return d / "small.onnx", d / "calib.npy"


def test_ig_mean_re_scores_by_default_and_no_rescore_turns_it_off(small_cli, tmp_path: Path) -> None:
    import json

    from tests.test_cli import run_cli

    model, calib = small_cli
    reports = {}
    for flag in ("", "--no-rescore"):
        out, rep = tmp_path / f"p{flag}.onnx", tmp_path / f"r{flag}.json"
        res = run_cli("prune", str(model), "--budget", "50%", "--criterion", "ig-mean", "--calib", str(calib),
                      "--best-effort", "--repeat", "5", "--cache-dir", str(tmp_path / "cache"), "-o", str(out),
                      "--report", str(rep), *([flag] if flag else []), "-q")
        assert res.returncode == 0, res.stderr
        reports[flag] = json.loads(rep.read_text())
        assert reports[flag]["oracle"]["max_rel_error"] < 1e-3
    on, off = reports[""], reports["--no-rescore"]
    assert on["rescore"] and not off["rescore"] and off["rescored_at_units_left"] == []
    left = on["rescored_at_units_left"]
    # each re-score on a smaller network (of the last search, when the final check made it search again)
    assert left and all(a > b for a, b in zip(left, left[1:])), (left, on["attempts"])
    assert on["seconds"]["rescore"] > 0 and "rescore" not in off["seconds"]


def test_a_re_score_says_one_line_not_the_first_scorings_batch_lines(small_cli, tmp_path: Path) -> None:
    from hwprune_fx.prune_budget import prune_to_budget

    model, calib = small_cli
    lines: list[str] = []
    res = prune_to_budget(model, "50%", criterion="ig-mean", calib=str(calib), best_effort=True, repeat=5,
                          cache_dir=tmp_path / "cache", progress=lines.append)
    again = [i for i, line in enumerate(lines) if "scored again at" in line]
    batches = [i for i, line in enumerate(lines) if ": batch " in line]
    left = res["report"]["rescored_at_units_left"]
    assert left and len(again) >= len(left)   # (more when the final check made the search run again)
    # the first scoring shows its batches; the re-scores do not
    assert batches and max(batches) < min(again)
    assert f"scored again at {left[-1]} of " in lines[again[-1]]


def test_rescore_needs_a_data_driven_criterion_and_a_budget(small_cli, tmp_path: Path) -> None:
    from tests.test_cli import _assert_clean_failure, run_cli

    model, calib = small_cli
    out = tmp_path / "p.onnx"
    res = run_cli("prune", str(model), "--budget", "50%", "--rescore", "-o", str(out), "-q")
    _assert_clean_failure(res, "data-driven criterion")
    res = run_cli("prune", str(model), "--budget", "50%", "--rescore", "--criterion", "ig", "--calib", str(calib),
                  "--search", "uniform", "-o", str(out), "-q")
    _assert_clean_failure(res, "not to uniform")
    res = run_cli("prune", str(model), "--ratio", "0.5", "--rescore", "-o", str(out))
    assert res.returncode == 2 and "needs --budget" in res.stderr
    assert not out.exists()


def test_the_prune_pass_takes_rescore_and_hands_it_to_the_search(small_cli) -> None:
    import onnx

    from hwprune_fx.errors import UserError
    from hwprune_fx.pass_infra import PassContext
    from hwprune_fx.pass_infra.registry import create_pass

    assert create_pass("prune", budget="50%", rescore="false").rescore is False
    assert create_pass("prune", budget="50%", rescore="none").rescore is None
    assert create_pass("prune", budget="50%").rescore is None
    with pytest.raises(UserError, match="rescore"):
        create_pass("prune", budget="50%", rescore="maybe")
    model, _ = small_cli
    # l1 gives the same scores at any cut: asking to re-score it is refused before anything is timed
    with PassContext(target="ort-cpu"), pytest.raises(UserError, match="data-driven criterion"):
        create_pass("prune", budget="50%", rescore="true")(onnx.load(str(model)))


class _FlatCost(_CountCost):
    """Sees no saving anywhere: Opti-Cut stalls and measures after every chunk."""

    def delta(self, keep: np.ndarray, remove: np.ndarray) -> float:
        return 0.0


def test_a_plateau_measured_step_by_step_re_scores_only_per_tenth_of_latency_fallen(tmp_path: Path) -> None:
    analysis, channels, scores, base, _ = _over_cut_case(tmp_path)
    budget = base - 64
    truth = lambda k: float(k.sum())  # noqa: E731
    rescore = _RescoreLog(scores)
    res = opti_cut(analysis, scores, _FlatCost(), channels, truth, budget, base, align=8, rescore=rescore)
    calls = rescore.calls
    measured = [h for h in res.history if h.step > 0 and h.measured_ms is not None]
    assert res.reached and len(measured) >= 7          # one measurement per 8-channel chunk
    assert 1 <= len(calls) < len(measured)
    assert rescore.apart(base) >= 0.10 * base
