"""Backends, sweeps and cost models: caching, consistency between models, exact variants.

No assertion here depends on wall-clock speed; timing numbers live in benchmarks/.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from hwprune_fx.analysis import analyze_dependencies
from hwprune_fx.cost_models import LayerChannels, count_macs, create_cost_model
from hwprune_fx.cost_models.lut import LutCostModel
from hwprune_fx.cost_models.measured import MeasuredCostModel
from hwprune_fx.cost_models.predictor import PredictorCostModel
from hwprune_fx.frontends.onnx_frontend import onnx_to_channel_graph
from hwprune_fx.oracle import onnx_oracle
from hwprune_fx.pipeline import load_onnx_model
from hwprune_fx.plan import PruningPlan
from hwprune_fx.profiling.layers import find_layers, layer_model, synthetic_layer_model
from hwprune_fx.profiling.sweep import sweep_layer
from hwprune_fx.targets import TimingConfig, create_backend
from hwprune_fx.errors import UserError

FAST = TimingConfig(warmup=1, repeat=3)


@pytest.fixture(scope="module")
def r18(torchvision_onnx):
    loaded = load_onnx_model(torchvision_onnx("resnet18", 32))
    analysis = analyze_dependencies(loaded.channel_graph)
    return loaded, analysis, LayerChannels.build(analysis, find_layers(loaded.graph))


def _random_keep(analysis, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    keep = np.ones(analysis.num_units, bool)
    for g in analysis.prunable_groups():
        k = int(g.size * rng.uniform(0.0, 0.7))
        keep[rng.choice(g.units, k, replace=False)] = False
    return keep


def test_measurement_is_cached_by_content(tmp_path, r18) -> None:
    loaded, _, _ = r18
    b = create_backend("ort-cpu", timing=FAST, cache_dir=tmp_path)
    first = b.measure(loaded.original)
    assert first.median_ms > 0 and first.threads == 1 and first.repeats == 3
    assert first.p10_ms <= first.median_ms <= first.p90_ms
    assert b.measure(loaded.original) == first  # from the cache: identical, not re-timed
    assert len(list((tmp_path / "measurements").glob("*.json"))) == 1
    other = create_backend("ort-cpu", timing=TimingConfig(warmup=1, repeat=4), cache_dir=tmp_path)
    assert other.measure(loaded.original).repeats == 4  # other settings, other key


def test_unknown_target_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown target"):
        create_backend("fpga-9000")


def test_layers_cover_every_conv_and_gemm(r18) -> None:
    loaded, _, ch = r18
    anchors = [n for n in loaded.graph.nodes if n.op in ("Conv", "Gemm")]
    assert len(ch.layers) == len(anchors) == 21
    # a layer model has the layer's real output shape
    import onnxruntime as ort
    layer = ch.layers[1]
    sess = ort.InferenceSession(layer_model(layer).SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(None, {layer.input.name: np.zeros(layer.input_shape, np.float32)})[0]
    assert tuple(out.shape) == layer.output_shape


def test_synthetic_layer_has_requested_channels(r18) -> None:
    import onnxruntime as ort
    _, _, ch = r18
    layer = ch.layers[3]
    m = synthetic_layer_model(layer, 40, 24)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    shape = list(layer.input_shape)
    shape[1] = 40
    assert sess.run(None, {"x": np.zeros(shape, np.float32)})[0].shape[1] == 24


def test_sweep_is_cached_and_second_run_measures_nothing(tmp_path, r18, monkeypatch) -> None:
    _, _, ch = r18
    b = create_backend("ort-cpu", timing=FAST, cache_dir=tmp_path)
    s1 = sweep_layer(ch.layers[2], b, "out", [8, 32, 64])
    assert s1.counts == (8, 32, 64) and all(ms > 0 for ms in s1.ms)
    monkeypatch.setattr(type(b), "_time_onnx", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-timed")))
    assert sweep_layer(ch.layers[2], b, "out", [8, 32, 64]) == s1


def test_flops_model_matches_macs_of_the_materialised_network(r18) -> None:
    loaded, analysis, ch = r18
    flops = create_cost_model("flops", channels=ch)
    full = np.ones(analysis.num_units, bool)
    keep = _random_keep(analysis, 1)
    model = MeasuredCostModel(loaded.original, analysis, create_backend("ort-cpu", timing=FAST, use_cache=False)).build(keep)
    macs_after = count_macs(onnx_to_channel_graph(gs.import_onnx(model)))
    assert flops.predict(full) * 1e6 == pytest.approx(count_macs(loaded.channel_graph), rel=1e-9)
    assert flops.predict(keep) * 1e6 == pytest.approx(macs_after, rel=1e-9)
    remove = np.flatnonzero(keep & ~analysis.unit_pinned)[:5]
    after = keep.copy()
    after[remove] = False
    assert flops.delta(keep, remove) == pytest.approx(flops.predict(after) - flops.predict(keep))


def test_measured_variants_are_exact(r18) -> None:
    loaded, analysis, _ = r18
    keep = _random_keep(analysis, 2)
    meas = MeasuredCostModel(loaded.original, analysis, create_backend("ort-cpu", timing=FAST, use_cache=False))
    plan = PruningPlan(analysis, np.flatnonzero(~keep))
    assert onnx_oracle(loaded.original, meas.build(keep), plan.removed_channels).exact
    assert meas.predict(keep) > 0


def test_lut_and_predictor_consistency(tmp_path, r18) -> None:
    loaded, analysis, ch = r18
    b = create_backend("ort-cpu", timing=FAST, cache_dir=tmp_path)
    lut = LutCostModel.profile(ch, b, points=3)
    full = np.ones(analysis.num_units, bool)
    # at full width the LUT is the sum of each layer's full-width sweep point
    assert lut.predict(full) == pytest.approx(sum(s.ms[-1] for s in lut.sweeps_out))
    keep = _random_keep(analysis, 3)
    remove = np.flatnonzero(keep & ~analysis.unit_pinned)[:7]
    after = keep.copy()
    after[remove] = False
    assert lut.delta(keep, remove) == pytest.approx(lut.predict(after) - lut.predict(keep))
    # the predictor reproduces a non-negative linear function of its own features exactly
    pred = PredictorCostModel(lut)
    configs = [_random_keep(analysis, s) for s in range(12)]
    truth = [2.0 + 1.5 * lut.predict(k) for k in configs]
    pred.fit(configs, truth)
    assert pred.predict(configs[-1]) == pytest.approx(truth[-1], rel=1e-3)
    # latency that falls as the LUT grows cannot be fitted with negative weights
    pred.fit(configs, [50.0 - lut.predict(k) for k in configs])
    assert (pred.coef >= 0).all()


def test_predictor_sees_unaligned_depthwise_widths(tmp_path, torchvision_onnx, r18) -> None:
    """Depthwise layers whose kept width is off a multiple of 4 are counted (their activation
    elements): random unaligned widths made MobileNetV2 variants slower than the original."""
    from hwprune_fx.cost_models.predictor import UNALIGNED_DEPTHWISE

    loaded = load_onnx_model(torchvision_onnx("mobilenet_v2", 32))
    analysis = analyze_dependencies(loaded.channel_graph)
    ch = LayerChannels.build(analysis, find_layers(loaded.graph))
    lut = LutCostModel.profile(ch, create_backend("ort-cpu", timing=FAST, cache_dir=tmp_path), points=2)
    pred = PredictorCostModel(lut, analysis)
    assert pred.feature_names()[-1] == f"depthwise_off_{UNALIGNED_DEPTHWISE}_Melems"
    full = np.ones(analysis.num_units, bool)
    assert pred.features(full)[-1] == 0.0                      # torchvision's widths are multiples of 8
    depthwise = [i for i, layer in enumerate(ch.layers) if layer.group > 1 and layer.group == layer.in_channels]
    i = depthwise[3]
    free = np.flatnonzero(~analysis.unit_pinned)
    unit = np.intersect1d(ch.out_units[i], free)[0]            # one channel of that depthwise layer
    off = full.copy()
    off[unit] = False
    cin, cout = ch.counts(off, i)
    layer = ch.layers[i]
    expected = sum(c * np.prod(s[2:]) / 1e6 for c, s in ((cin, layer.input_shape), (cout, layer.output_shape)))
    assert cin % UNALIGNED_DEPTHWISE and pred.features(off)[-1] == pytest.approx(expected)
    without = PredictorCostModel(lut, analysis, unaligned_depthwise=False)   # the ablation's switch
    assert without.feature_names() == pred.feature_names()[:-1]
    assert np.array_equal(without.features(off), pred.features(off)[:-1])
    # ResNet-18 has no depthwise layer, so no such column (names only: no sweep is read)
    _, r18_analysis, r18_ch = r18
    r18_pred = PredictorCostModel(LutCostModel(r18_ch, [], []), r18_analysis)
    assert not any(name.startswith("depthwise_off") for name in r18_pred.feature_names())


def test_torch_target_times_modules_and_onnx_through_onnx2torch(r18) -> None:
    import onnx
    import torch

    from hwprune_fx.targets.torch_eager import TorchEagerBackend

    b = create_backend("torch", timing=FAST, use_cache=False)
    assert isinstance(b, TorchEagerBackend)
    m = b.measure_module(torch.nn.Conv2d(3, 8, 3), (torch.randn(1, 3, 16, 16),))
    assert m.median_ms > 0 and m.threads == 1 and m.settings["torch"] == torch.__version__
    assert b.measure(r18[0].original).repeats == FAST.repeat
    broken = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("NoSuchOp", ["x"], ["y"], domain="nowhere")], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])]))
    with pytest.raises(UserError, match="onnx2torch cannot rebuild"):
        b.measure(broken)
