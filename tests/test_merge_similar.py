"""``similarity`` criterion, ``merge-similar`` pass and the merge oracle.

The models plant an exact duplicate: filter ``c`` of a conv is twice filter ``k`` (bias too),
so after ReLU channel ``c`` is exactly ``2 *`` channel ``k`` and merging it loses nothing.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from hwprune_fx.analysis import analyze_dependencies
from hwprune_fx.analysis.mergeable import Merge, find_merge_sites
from hwprune_fx.calib import CalibrationData
from hwprune_fx.criteria import create_criterion
from hwprune_fx.criteria.similarity import SimilarityCriterion
from hwprune_fx.errors import RewriteError, UserError
from hwprune_fx.merge_oracle import merge_oracle
from hwprune_fx.oracle import onnx_oracle, random_inputs, relative_error, run_onnx
from hwprune_fx.passes.merge_similar import MergeSimilarPass, applicable_merges, materialize_merged
from hwprune_fx.pipeline import load_onnx_model, materialize
from hwprune_fx.plan import PruningPlan, plan_by_ratio
from tests.onnx_builders import Depthwise, Residual, export
from tests.helpers import randomize_bn

C1, K1 = 5, 1   # conv1: channel 5 = 2 * channel 1 after ReLU (read by a Conv)
C2, K2 = 4, 0   # conv2 -> BN -> ReLU -> GAP -> Flatten: channel 4 = 2 * channel 0 (read by a Gemm)


class Planted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 6, 3, padding=1)
        self.bn, self.fc = nn.BatchNorm2d(6), nn.Linear(6, 5)

    def forward(self, x):
        y = torch.relu(self.c2(torch.relu(self.c1(x))))
        y = torch.relu(self.bn(y))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def _plant(conv: nn.Conv2d, c: int, k: int, bn: nn.BatchNorm2d | None = None) -> None:
    """Make output channel ``c`` exactly ``2 *`` channel ``k`` after ``bn`` and a ReLU."""
    with torch.no_grad():
        conv.weight[c] = 2 * conv.weight[k]
        conv.bias[c] = 2 * conv.bias[k]
        if bn is not None:
            bn.running_mean[c] = 2 * bn.running_mean[k]
            bn.running_var[c] = bn.running_var[k]
            bn.weight[c] = bn.weight[k]
            bn.bias[c] = 2 * bn.bias[k]


def _calib(shape: tuple[int, ...], n: int = 12, seed: int = 1) -> CalibrationData:
    rng = np.random.default_rng(seed)
    return CalibrationData({"input": rng.standard_normal((n, *shape[1:])).astype(np.float32)}, "random")


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    model = randomize_bn(Planted())
    _plant(model.c1, C1, K1)
    _plant(model.c2, C2, K2, model.bn)
    path = tmp_path_factory.mktemp("merge") / "planted.onnx"
    model.eval()
    torch.onnx.export(model, (torch.randn(1, 3, 12, 12),), str(path), dynamo=False, opset_version=18,
                      input_names=["input"], output_names=["out"])
    loaded = load_onnx_model(path)
    analysis = analyze_dependencies(loaded.channel_graph)
    crit = create_criterion("similarity", model=loaded.original, calib=_calib((1, 3, 12, 12)))
    scores = crit.score(analysis)
    return loaded, analysis, crit, scores


def _site_groups(analysis):
    sites, _ = find_merge_sites(analysis)
    conv_site = next(s for s in sites.values() if analysis.graph.consumers(s.tensor)[0].op_type == "Conv")
    gemm_site = next(s for s in sites.values() if analysis.graph.consumers(s.tensor)[0].op_type == "Gemm")
    return conv_site, gemm_site


def test_criterion_finds_planted_twins(planted) -> None:
    loaded, analysis, crit, scores = planted
    assert SimilarityCriterion.needs_data is True
    for site, (c, k) in zip(_site_groups(analysis), [(C1, K1), (C2, K2)]):
        units = analysis.units_of(site.tensor)
        m = crit.twins[int(units[c])]
        assert (m.twin, m.tensor, m.c, m.k) == (int(units[k]), site.tensor, c, k)
        assert m.alpha == pytest.approx(2.0, rel=1e-4)
        group_scores = scores[site.group.units]
        assert scores[units[c]] == group_scores.min()
        assert scores[units[c]] < 1e-5 * np.sort(group_scores)[1]
        assert int(units[k]) not in crit.twins  # the anchor is not merged away as well


def test_merged_network_equals_the_original(planted) -> None:
    loaded, analysis, crit, _ = planted
    conv_site, gemm_site = _site_groups(analysis)
    gone = [int(analysis.units_of(conv_site.tensor)[C1]), int(analysis.units_of(gemm_site.tensor)[C2])]
    plan = PruningPlan(analysis, np.array(gone))
    merges = applicable_merges(plan, crit.twins)
    assert sorted(m.unit for m in merges) == sorted(gone)
    pruned = materialize_merged(loaded.original, plan, crit.twins)
    feeds = random_inputs(loaded.original, seed=3)
    rel, _ = relative_error(run_onnx(loaded.original, feeds)[0], run_onnx(pruned, feeds)[0])
    assert rel < 1e-5
    assert merge_oracle(loaded.original, pruned, plan.removed_channels, merges, feeds).exact
    # zeroing the planted channels instead changes the output: the merge is what keeps it exact
    plain = materialize(loaded.original, plan)
    assert relative_error(run_onnx(loaded.original, feeds)[0], run_onnx(plain, feeds)[0])[0] > 1e-3


def test_ratio_plan_with_merges_is_exact_by_the_merge_oracle(planted) -> None:
    loaded, analysis, crit, scores = planted
    plan = plan_by_ratio(analysis, scores, 0.3)
    merges = applicable_merges(plan, crit.twins)
    assert len(merges) >= 2
    pruned = materialize_merged(loaded.original, plan, merges)
    feeds = random_inputs(loaded.original, seed=4)
    res = merge_oracle(loaded.original, pruned, plan.removed_channels, merges, feeds)
    assert res.exact, res
    # the plain zero-out oracle does not describe a merged network
    assert not onnx_oracle(loaded.original, pruned, plan.removed_channels, feeds).exact


def test_merge_pass_alone_matches_the_reference(planted) -> None:
    import onnx_graphsurgeon as gs

    loaded, analysis, crit, _ = planted
    conv_site, _ = _site_groups(analysis)
    m = crit.twins[int(analysis.units_of(conv_site.tensor)[C1])]
    graph = gs.import_onnx(loaded.original)
    assert MergeSimilarPass([m])(graph).modified
    assert not MergeSimilarPass([m])(graph).modified  # W[:, c] is zero now: folding again changes nothing
    merged_only = gs.export_onnx(graph)
    removed = {m.tensor: {"axis": 1, "indices": [m.c]}}
    assert merge_oracle(loaded.original, merged_only, removed, [m]).exact


def test_merge_with_removed_twin_is_not_applied(planted) -> None:
    import onnx_graphsurgeon as gs

    loaded, analysis, crit, _ = planted
    conv_site, _ = _site_groups(analysis)
    units = analysis.units_of(conv_site.tensor)
    plan = PruningPlan(analysis, np.array([units[C1], units[K1]]))
    assert applicable_merges(plan, crit.twins) == []
    feeds = random_inputs(loaded.original, seed=5)
    merged = materialize_merged(loaded.original, plan, crit.twins)
    assert onnx_oracle(loaded.original, merged, plan.removed_channels, feeds).exact  # a plain zero-out
    graph = gs.import_onnx(loaded.original)
    assert MergeSimilarPass([])(graph).modified is False


def test_oracle_fails_on_a_wrong_alpha(planted) -> None:
    loaded, analysis, crit, scores = planted
    plan = plan_by_ratio(analysis, scores, 0.3)
    merges = applicable_merges(plan, crit.twins)
    pruned = materialize_merged(loaded.original, plan, merges)
    feeds = random_inputs(loaded.original, seed=6)
    wrong = [m._replace(alpha=m.alpha * 1.5) for m in merges]
    assert not merge_oracle(loaded.original, pruned, plan.removed_channels, wrong, feeds).exact
    swapped = [m._replace(k=(m.k + 1) % 6) if m.k + 1 != m.c else m._replace(k=(m.k + 2) % 6) for m in merges]
    assert not merge_oracle(loaded.original, pruned, plan.removed_channels, swapped, feeds).exact


def test_needs_calibration_data(planted) -> None:
    loaded = planted[0]
    with pytest.raises(UserError, match=r"criterion 'similarity' needs calibration data: pass --calib FILE "
                                        r"\(\.npz/\.npy or a folder of images\)"):
        create_criterion("similarity", model=loaded.original)
    with pytest.raises(UserError, match="max_residual"):
        create_criterion("similarity", model=loaded.original, calib=_calib((1, 3, 12, 12)), max_residual=1.5)


def _loaded(module: nn.Module, shape: tuple[int, ...], path: Path):
    loaded = load_onnx_model(export(module, shape, path))
    return loaded, analyze_dependencies(loaded.channel_graph)


def test_residual_stream_is_never_merged(tmp_path: Path) -> None:
    loaded, analysis = _loaded(Residual(), (1, 3, 8, 8), tmp_path / "res.onnx")
    sites, reasons = find_merge_sites(analysis)
    assert not sites and reasons
    assert all("not one" in r for r in reasons.values())
    crit = create_criterion("similarity", model=loaded.original, calib=_calib((1, 3, 8, 8)), max_residual=0.99)
    scores = crit.score(analysis)
    assert crit.twins == {} and (scores[analysis.prunable_groups()[0].units] > 0).all()


class DepthwiseBeside(nn.Module):
    """``T`` is read by a depthwise conv and by a 1x1 conv: the channel leaves through two tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.pw, self.dw = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.mix, self.out = nn.Conv2d(6, 6, 1), nn.Conv2d(6, 2, 1)

    def forward(self, x):
        t = torch.relu(self.pw(x))
        return self.out(self.dw(t) + self.mix(t))


def test_depthwise_reader_is_not_a_merge_site(tmp_path: Path) -> None:
    import onnx_graphsurgeon as gs

    loaded, analysis = _loaded(DepthwiseBeside(), (1, 3, 8, 8), tmp_path / "dwb.onnx")
    sites, reasons = find_merge_sites(analysis)
    t = _conv_outputs(loaded.original)[0]
    pw_group = next(g for g in analysis.prunable_groups() if t in g.tensors)
    assert pw_group.id not in sites and "2 tensors" in reasons[pw_group.id]
    crit = create_criterion("similarity", model=loaded.original, calib=_calib((1, 3, 8, 8)), max_residual=0.99)
    crit.score(analysis)
    assert not any(m.unit in set(pw_group.units.tolist()) for m in crit.twins.values())

    # Depthwise: pw -> dw -> out. The dw conv is part of the channel's chain, so the merge is
    # folded into the conv after it, never into the depthwise conv itself.
    loaded, analysis = _loaded(Depthwise(), (1, 3, 8, 8), tmp_path / "dw.onnx")
    sites, _ = find_merge_sites(analysis)
    pw_out, dw_out, _ = _conv_outputs(loaded.original)
    assert [s.tensor for s in sites.values()] == [dw_out]
    graph = gs.import_onnx(loaded.original)
    with pytest.raises(RewriteError, match="grouped convolution"):
        MergeSimilarPass([Merge(0, 1, 1.0, pw_out, 0, 1)])(graph)


def _conv_outputs(model: onnx.ModelProto) -> list[str]:
    return [n.output[0] for n in model.graph.node if n.op_type == "Conv"]


PLANTED = [(7, 3), (20, 11), (100, 5)]


def _planted_resnet18(path: Path) -> Path:
    from hwprune_fx.zoo import build_model, export_onnx

    model = build_model("resnet18")
    # exact duplicates inside two basic blocks (conv1 -> bn1 -> relu -> conv2): mergeable sites
    for block, pairs in ((model.layer1[0], PLANTED[:2]), (model.layer3[1], PLANTED[2:])):
        for c, k in pairs:
            _plant_nobias(block, c, k)
    export_onnx(model, (1, 3, 64, 64), path)
    return path


def _plant_nobias(block: nn.Module, c: int, k: int) -> None:
    with torch.no_grad():
        block.conv1.weight[c] = 2 * block.conv1.weight[k]
        bn = block.bn1
        bn.running_mean[c] = 2 * bn.running_mean[k]
        bn.running_var[c] = 4 * bn.running_var[k] + 3 * bn.eps   # (var + eps) scales by 4
        bn.weight[c] = 2 * bn.weight[k]
        bn.bias[c] = 2 * bn.bias[k]


def test_resnet18_end_to_end(tmp_path: Path) -> None:
    loaded = load_onnx_model(_planted_resnet18(tmp_path / "resnet18.onnx"))
    analysis = analyze_dependencies(loaded.channel_graph)
    sites, reasons = find_merge_sites(analysis)
    assert len(sites) == 8 and reasons   # conv1 of every basic block; residual streams are not
    crit = create_criterion("similarity", model=loaded.original, calib=_calib((1, 3, 64, 64), n=8))
    scores = crit.score(analysis)
    plan = plan_by_ratio(analysis, scores, 0.3)
    merges = applicable_merges(plan, crit.twins)
    planted = [m for m in crit.twins.values() if (m.c, m.k) in PLANTED and m.alpha == pytest.approx(2.0, rel=1e-3)]
    assert len(planted) == 3
    assert set(planted) <= set(merges)
    pruned = materialize_merged(loaded.original, plan, merges)
    feeds = random_inputs(loaded.original, seed=7)
    res = merge_oracle(loaded.original, pruned, plan.removed_channels, merges, feeds)
    assert res.exact, res
    assert onnx.checker.check_model(pruned) is None


class TokensMatMul(nn.Module):
    """conv -> ReLU -> tokens [N, HW, C] -> Linear (exported as MatMul with a constant weight)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 1), nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(2).transpose(1, 2))


def test_matmul_reader_merges_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TokensMatMul()
    _plant(model.conv, 6, 2)
    loaded, analysis = _loaded(model, (1, 3, 4, 4), tmp_path / "tokens.onnx")
    sites, _ = find_merge_sites(analysis)
    (site,) = sites.values()
    assert [op.op_type for op in site.consumers] == ["MatMul"]
    crit = create_criterion("similarity", model=loaded.original, calib=_calib((1, 3, 4, 4)))
    crit.score(analysis)
    unit = int(analysis.units_of(site.tensor)[6])
    assert crit.twins[unit].alpha == pytest.approx(2.0, rel=1e-4)
    plan = PruningPlan(analysis, np.array([unit]))
    pruned = materialize_merged(loaded.original, plan, crit.twins)
    feeds = random_inputs(loaded.original, seed=8)
    assert relative_error(run_onnx(loaded.original, feeds)[0], run_onnx(pruned, feeds)[0])[0] < 1e-5
    assert merge_oracle(loaded.original, pruned, plan.removed_channels, [crit.twins[unit]], feeds).exact
