"""Before/expected: channel groups of tiny graphs, and exactness of their pruning."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwprune_fx.pipeline import analyze, prune_onnx
from tests import onnx_builders as B


def _prunable(path) -> list[tuple[int, int]]:
    """(size, number of tensors) of every prunable group."""
    return sorted((g.size, len(g.tensors)) for g in analyze(path).prunable_groups())


def test_conv_bn_relu_is_one_group_over_three_tensors(tmp_path) -> None:
    path = B.export(B.ConvBnRelu(), (1, 3, 8, 8), tmp_path / "m.onnx")
    # conv out, bn out, relu out: 8 channels; BN stays a node because it follows no fold here
    groups = analyze(path).prunable_groups()
    assert [g.size for g in groups] == [8]
    assert len(groups[0].tensors) >= 2


def test_residual_add_couples_both_branches(tmp_path) -> None:
    path = B.export(B.Residual(), (1, 3, 8, 8), tmp_path / "m.onnx")
    groups = analyze(path).prunable_groups()
    assert [g.size for g in groups] == [8]
    # stem output, branch conv output, the add and the relu all lose the same channels
    assert len(groups[0].tensors) == 4
    assert set(groups[0].producers) == {n for n in groups[0].producers if "Conv" in n} and len(groups[0].producers) == 2


def test_depthwise_ties_input_and_output(tmp_path) -> None:
    path = B.export(B.Depthwise(), (1, 3, 8, 8), tmp_path / "m.onnx")
    assert _prunable(path) == [(6, 2)]


def test_concat_keeps_inputs_separate(tmp_path) -> None:
    path = B.export(B.ConcatTwo(), (1, 3, 8, 8), tmp_path / "m.onnx")
    assert _prunable(path) == [(4, 2), (6, 2)]


def test_grouped_conv_units_span_every_group(tmp_path) -> None:
    path = B.export(B.Grouped(), (1, 3, 8, 8), tmp_path / "m.onnx")
    # 8 inputs in 4 groups of 2: position k of every group goes together -> 2 units;
    # 12 outputs in 4 groups of 3 -> 3 units
    assert _prunable(path) == [(2, 1), (3, 1)]


def test_layernorm_over_channels_is_a_barrier_with_reason(tmp_path) -> None:
    path = B.export(B.LayerNormMix(), (1, 3, 8, 8), tmp_path / "m.onnx")
    a = analyze(path)
    assert not a.prunable_groups()
    reasons = [r for g in a.groups for r in g.reasons]
    assert any("mixes channels" in r for r in reasons)


@pytest.mark.parametrize("builder", [B.ConvBnRelu, B.Residual, B.Depthwise, B.ConcatTwo, B.Grouped])
@pytest.mark.parametrize("criterion", ["l1", "l2", "bn", "random"])
def test_small_graphs_prune_exactly(tmp_path, builder, criterion) -> None:
    path = B.export(builder(), (1, 3, 8, 8), tmp_path / "m.onnx")
    res = prune_onnx(path, ratio=0.5, criterion=criterion)
    assert res.report["removed_units"] > 0
    assert res.report["oracle"]["max_rel_error"] < 1e-3
    assert res.report["params_after"] < res.report["params_before"]


def _model_with_unknown_op() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 1, 1)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w2")
    w3 = numpy_helper.from_array(rng.standard_normal((2, 4, 1, 1)).astype(np.float32), "w3")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="c1"),
        helper.make_node("Relu", ["a"], ["b"], name="r1"),
        helper.make_node("Conv", ["b", "w2"], ["c"], name="c2"),
        helper.make_node("LpNormalization", ["c"], ["d"], name="mystery", axis=1),
        helper.make_node("Conv", ["d", "w3"], ["y"], name="c3"),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])], [w1, w2, w3])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def test_unknown_operator_is_a_barrier_and_the_rest_still_prunes() -> None:
    model = _model_with_unknown_op()
    a = analyze(model)
    pinned = [g for g in a.groups if any("LpNormalization" in r for r in g.reasons)]
    assert pinned and all(not g.prunable for g in pinned)
    assert [g.size for g in a.prunable_groups()] == [8]
    res = prune_onnx(model, ratio=0.5)
    assert res.report["removed_units"] == 4
    assert res.report["oracle"]["max_rel_error"] < 1e-3


def test_oracle_can_fail() -> None:
    """Report the wrong channels and the oracle must notice."""
    from hwprune_fx.oracle import onnx_oracle

    model = _model_with_unknown_op()
    res = prune_onnx(model, ratio=0.5)
    wrong = {t: {"axis": e["axis"], "indices": [(i + 1) % 8 for i in e["indices"]]}
             for t, e in res.plan.removed_channels.items()}
    from hwprune_fx.pipeline import load_onnx_model
    assert not onnx_oracle(load_onnx_model(model).original, res.model, wrong).exact
