"""The registered passes on small graphs: before/expected, numerical equality, the oracle, honest ``modified``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from hwprune_fx.errors import UserError, VerificationError
from hwprune_fx.oracle import onnx_oracle, random_inputs, run_onnx
from hwprune_fx.pass_infra import (IRDumpInstrument, LatencyInstrument, PassBase, PassResult, Pipeline,
                                   VerifyInstrument, create_pass, register_pass)
from tests.helpers import randomize_bn

RNG = np.random.default_rng(0)


def _init(name: str, *shape: int, positive: bool = False) -> onnx.TensorProto:
    values = RNG.random(shape) + 0.5 if positive else RNG.standard_normal(shape)
    return numpy_helper.from_array(values.astype(np.float32), name)


def _bn_inits(prefix: str, c: int) -> list[onnx.TensorProto]:
    return [_init(f"{prefix}_s", c, positive=True), _init(f"{prefix}_b", c), _init(f"{prefix}_m", c),
            _init(f"{prefix}_v", c, positive=True)]


def _model(nodes: list, inits: list, out_shape: tuple[int, ...] = (1, 4, 8, 8), out: str = "out") -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, list(out_shape))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _bn(prefix: str, x: str, y: str, eps: float = 1e-5) -> onnx.NodeProto:
    return helper.make_node("BatchNormalization", [x, f"{prefix}_s", f"{prefix}_b", f"{prefix}_m", f"{prefix}_v"],
                            [y], name=prefix, epsilon=eps)


def conv_bn_net() -> onnx.ModelProto:
    """x -> Conv(bias) -> BN -> Relu -> Conv(no bias) -> BN -> Add(BN of a Relu) -> out."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        _bn("bn1", "c1", "n1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        _bn("bn2", "c2", "n2", eps=1e-3),
        helper.make_node("Relu", ["n2"], ["r2"], name="relu2"),
        _bn("bn3", "r2", "n3"),  # after a Relu: not foldable
        helper.make_node("Add", ["n2", "n3"], ["out"], name="add"),
    ]
    inits = [_init("w1", 6, 3, 3, 3), _init("b1", 6), _init("w2", 4, 6, 1, 1),
             *_bn_inits("bn1", 6), *_bn_inits("bn2", 4), *_bn_inits("bn3", 4)]
    return _model(nodes, inits)


def plain_net() -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["out"], name="conv2")]
    return _model(nodes, [_init("w1", 6, 3, 3, 3), _init("b1", 6), _init("w2", 4, 6, 1, 1)])


def _same(a: onnx.ModelProto, b: onnx.ModelProto, tol: float = 1e-4) -> None:
    feeds = random_inputs(a, seed=1)
    for ra, rb in zip(run_onnx(a, feeds), run_onnx(b, feeds)):
        np.testing.assert_allclose(rb, ra, rtol=tol, atol=tol * float(np.abs(ra).max()))


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


# ------------------------------------------------------------------------------ fold-bn

def test_fold_bn_onnx_folds_conv_bn_and_keeps_outputs() -> None:
    before = conv_bn_net()
    snapshot = before.SerializeToString()
    result = create_pass("fold-bn")(before)
    assert result.modified
    assert _ops(result.model) == ["Conv", "Relu", "Conv", "Relu", "BatchNormalization", "Add"]
    assert sorted(result.details["folded"]) == ["bn1", "bn2"]
    assert result.details["not_folded"] == {"bn3": "input comes from Relu, not Conv"}
    _same(before, result.model)
    onnx.checker.check_model(result.model)
    assert before.SerializeToString() == snapshot  # functional: the input is untouched


def test_fold_bn_onnx_leaves_a_shared_conv_output() -> None:
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             _bn("bn1", "c1", "n1"),
             helper.make_node("Conv", ["c1", "w2"], ["c2"], name="conv2"),
             helper.make_node("Conv", ["n1", "w3"], ["c3"], name="conv3"),
             helper.make_node("Add", ["c2", "c3"], ["out"], name="add")]
    model = _model(nodes, [_init("w1", 6, 3, 3, 3), _init("w2", 4, 6, 1, 1), _init("w3", 4, 6, 1, 1),
                           *_bn_inits("bn1", 6)])
    result = create_pass("fold-bn")(model)
    assert not result.modified and result.model is model
    assert result.details["not_folded"] == {"bn1": "the Conv output has other consumers"}


def test_fold_bn_without_bn_is_unmodified() -> None:
    model = plain_net()
    result = create_pass("fold-bn")(model)
    assert not result.modified and result.model is model


class _TorchNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.bn2 = nn.Conv2d(8, 4, 1, bias=False), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn2(self.c2(torch.relu(self.bn1(self.c1(x)))))


def test_fold_bn_fx_matches_the_module() -> None:
    net = randomize_bn(_TorchNet())
    gm = torch.fx.symbolic_trace(net)
    result = create_pass("fold-bn")(gm)
    assert result.modified and result.details == {"folded": 2}
    assert isinstance(result.model, torch.fx.GraphModule) and result.model is not gm
    assert not any(isinstance(m, nn.BatchNorm2d) for m in result.model.modules())
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), net(x), rtol=1e-4, atol=1e-5)
    assert any(n.op == "call_module" and "bn" in str(n.target) for n in gm.graph.nodes)  # input untouched


def test_fold_bn_fx_without_bn_and_in_training_mode() -> None:
    plain = torch.fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()).eval())
    result = create_pass("fold-bn")(plain)
    assert not result.modified and result.model is plain
    with pytest.raises(UserError, match="eval mode"):
        create_pass("fold-bn")(torch.fx.symbolic_trace(_TorchNet().train()))


# ------------------------------------------------------------------------------ cleanup

def _dirty_net() -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Identity", ["c1"], ["i1"], name="ident"),
             helper.make_node("Relu", ["i1"], ["r1"], name="relu1"),
             helper.make_node("Sigmoid", ["c1"], ["dead"], name="dead_sigmoid"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             helper.make_node("Identity", ["c2"], ["out"], name="ident_out")]
    return _model(nodes, [_init("w1", 6, 3, 3, 3), _init("b1", 6), _init("w2", 4, 6, 1, 1),
                          _init("unused", 5)])


def test_cleanup_removes_identities_dead_nodes_and_unused_initializers() -> None:
    before = _dirty_net()
    result = create_pass("cleanup")(before)
    assert result.modified
    assert _ops(result.model) == ["Conv", "Relu", "Conv"]
    assert [o.name for o in result.model.graph.output] == ["out"]  # the output keeps its name
    assert result.model.graph.node[-1].output[0] == "out"
    assert {i.name for i in result.model.graph.initializer} == {"w1", "b1", "w2"}
    assert result.details == {"identities_removed": 2, "dead_nodes_removed": 1, "initializers_removed": 1,
                              "reordered": False}
    _same(before, result.model, tol=1e-6)
    onnx.checker.check_model(result.model)


def test_cleanup_sorts_nodes() -> None:
    model = plain_net()
    model.graph.node.reverse()
    result = create_pass("cleanup")(model)
    assert result.modified and result.details["reordered"]
    assert _ops(result.model) == ["Conv", "Relu", "Conv"]


def test_cleanup_keeps_an_identity_from_input_to_output() -> None:
    nodes = [helper.make_node("Identity", ["x"], ["out"], name="ident")]
    model = _model(nodes, [], out_shape=(1, 3, 8, 8))
    result = create_pass("cleanup")(model)
    assert not result.modified and result.model is model


def test_cleanup_on_a_clean_net_is_unmodified() -> None:
    model = plain_net()
    result = create_pass("cleanup")(model)
    assert not result.modified and result.model is model


# ------------------------------------------------------------------------------ prune-ratio

def _export_with_bn(module: nn.Module, path: Path) -> onnx.ModelProto:
    """Export keeping BatchNormalization nodes (constant folding would fold them into the convs)."""
    module.eval()
    torch.onnx.export(module, (torch.randn(1, 3, 8, 8),), str(path), dynamo=False, opset_version=18,
                      input_names=["input"], output_names=["out"], do_constant_folding=False)
    return onnx.load(str(path))


class _SmallConvNet(nn.Module):
    """Conv-BN-ReLU twice with a residual add, then a 1x1 head: two prunable groups."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.a, self.bn1 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.b, self.bn2 = nn.Conv2d(16, 12, 3, padding=1), nn.BatchNorm2d(12)
        self.head = nn.Conv2d(12, 4, 1)

    def forward(self, x):
        y = torch.relu(self.bn0(self.stem(x)))
        y = torch.relu(y + self.bn1(self.a(y)))
        return self.head(torch.relu(self.bn2(self.b(y))))


@pytest.fixture(scope="module")
def small_net(tmp_path_factory: pytest.TempPathFactory) -> onnx.ModelProto:
    torch.manual_seed(0)
    return _export_with_bn(randomize_bn(_SmallConvNet()), tmp_path_factory.mktemp("net") / "small.onnx")


def test_prune_ratio_is_exact_by_the_oracle(small_net: onnx.ModelProto) -> None:
    result = create_pass("prune-ratio", ratio="0.5", criterion="l2")(small_net)
    assert result.modified
    report = result.details["report"]
    assert report["criterion"] == "l2" and report["params_after"] < report["params_before"]
    res = onnx_oracle(small_net, result.model, result.details["removed_channels"], random_inputs(small_net, seed=3))
    assert res.exact, res
    onnx.checker.check_model(result.model)


def test_prune_ratio_that_removes_nothing_is_unmodified(small_net: onnx.ModelProto) -> None:
    result = create_pass("prune-ratio", ratio=0.01)(small_net)
    assert not result.modified and result.model is small_net
    assert result.details["report"]["removed_units"] == 0


def test_prune_ratio_refuses_a_torch_module() -> None:
    with pytest.raises(UserError, match="prune-ratio works on an onnx.ModelProto"):
        create_pass("prune-ratio", ratio=0.3)(torch.fx.symbolic_trace(nn.Conv2d(3, 4, 1)))


# ------------------------------------------------------------------------------ pipelines and instruments

def test_pipeline_fold_prune_cleanup_is_exact(small_net: onnx.ModelProto, tmp_path: Path) -> None:
    dump = IRDumpInstrument(tmp_path / "ir")
    result = Pipeline.parse("fold-bn,prune-ratio(ratio=0.3),cleanup").run(
        small_net, instruments=[VerifyInstrument(), dump], seed=5)
    assert [(r.name, r.modified) for r in result.records] == [("fold-bn", True), ("prune-ratio", True),
                                                              ("cleanup", False)]
    assert "BatchNormalization" not in _ops(result.model)
    assert [p.name for p in dump.written] == ["00-input.onnx", "01-fold-bn.onnx", "02-prune-ratio.onnx",
                                              "03-cleanup.onnx"]
    folded = onnx.load(str(dump.written[1]))
    _same(small_net, folded)  # fold-bn: the same function
    removed = result.record("prune-ratio").details["removed_channels"]
    assert onnx_oracle(folded, result.model, removed, random_inputs(folded, seed=9)).exact  # pruning: exact
    assert result.record("prune-ratio").details["report"]["macs_after"] < \
        result.record("prune-ratio").details["report"]["macs_before"]


def test_pipeline_runs_from_a_path(small_net: onnx.ModelProto, tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(small_net, str(path))
    result = Pipeline.parse("fold-bn").run(str(path))
    assert result.modified and "BatchNormalization" not in _ops(result.model)


def test_latency_instrument_counts_macs_and_measures_the_final_model(small_net: onnx.ModelProto) -> None:
    lat = LatencyInstrument(measure_after=("fold-bn",))
    Pipeline.parse("fold-bn,prune-ratio(ratio=0.5),cleanup").run(small_net, instruments=[lat], repeat=3, threads=1)
    names = [r.pass_name for r in lat.records]
    assert names == ["input", "fold-bn", "prune-ratio", "cleanup"]
    macs = [r.macs for r in lat.records]
    assert macs[0] == macs[1] > macs[2] == macs[3] > 0
    measured = [r.measured_ms for r in lat.records]
    assert measured[0] is None and measured[2] is None
    assert measured[1] > 0 and measured[3] > 0  # asked for after fold-bn, and the final model
    assert lat.records[3].p10_ms <= lat.records[3].p90_ms


@register_pass("test-break-onnx")
class _BreakOnnx(PassBase):
    """Test only: points a node at a tensor that does not exist."""

    in_place = False

    def call(self, model: onnx.ModelProto) -> PassResult:
        out = onnx.ModelProto()
        out.CopyFrom(model)
        out.graph.node[0].input[0] = "missing"
        return PassResult(out, True)


def test_verify_instrument_names_the_pass() -> None:
    with pytest.raises(VerificationError, match=r"after pass 'test-break-onnx': onnx.checker"):
        Pipeline.parse("cleanup,test-break-onnx").run(plain_net(), instruments=[VerifyInstrument()])


# ------------------------------------------------------------------------------ prune (to a budget)

def test_prune_pass_uses_the_context_target_and_keeps_its_report(small_net: onnx.ModelProto, tmp_path: Path) -> None:
    messages: list[str] = []
    result = Pipeline.parse("prune(budget=1.3x,search=uniform,cost_model=flops,align=1,best_effort=true)").run(
        small_net, target="ort-cpu", repeat=5, cache_dir=str(tmp_path / "cache"), progress=messages.append)
    record = result.record("prune")
    report = record.details["report"]
    assert report["target"] == "ort-cpu" and report["budget"] == "1.3x" and report["search"] == "uniform"
    assert record.modified == (report["removed_units"] > 0)
    assert any("baseline" in m for m in messages)  # the context's progress callback reached the search
    if record.modified:
        onnx.checker.check_model(result.model)


def test_prune_pass_passes_the_context_on(small_net: onnx.ModelProto, monkeypatch: pytest.MonkeyPatch) -> None:
    import hwprune_fx.prune_budget as prune_budget

    seen: dict = {}

    def fake(model, budget, *, calib=None, **kwargs):  # the context reaches prune_to_budget unchanged
        seen.update(kwargs, calib=calib, budget=budget)
        return {"model": model, "plan": type("P", (), {"is_empty": True})(), "report": {"fake": True}}

    monkeypatch.setattr(prune_budget, "prune_to_budget", fake)
    calib = {"input": np.zeros((1, 3, 8, 8), np.float32)}
    result = Pipeline.parse("prune(budget=2ms,search=hilp,criterion=l2,align=4)").run(
        small_net, target="torch", threads=2, repeat=7, calib=calib, cache_dir="/c", input_shapes={"input": [1, 3, 8, 8]})
    assert not result.modified and result.record("prune").details == {"report": {"fake": True}}
    assert seen["budget"].text == "2ms" and seen["calib"] is calib
    assert {k: seen[k] for k in ("target", "threads", "repeat", "search", "criterion", "align", "cache_dir")} == {
        "target": "torch", "threads": 2, "repeat": 7, "search": "hilp", "criterion": "l2", "align": 4, "cache_dir": "/c"}
    assert seen["input_shapes"] == {"input": [1, 3, 8, 8]}

    def fake_without_calib(model, budget, **kwargs):
        return fake(model, budget, **kwargs)

    monkeypatch.setattr(prune_budget, "prune_to_budget", fake_without_calib)
    with pytest.raises(UserError, match="calibration data was given"):
        Pipeline.parse("prune(budget=60%)").run(small_net, calib=calib)
