"""The code paths for models above 2 GB, exercised on small models so that CI can afford them."""
from __future__ import annotations

import numpy as np
import onnx

from hwprune_fx.frontends.onnx_external import save_with_external_data
from hwprune_fx.oracle import mask_removed_channels, random_inputs, relative_error, run_onnx
from hwprune_fx.pipeline import load_onnx_model, prune_onnx


def test_weight_free_oracle_matches_the_copying_one(torchvision_onnx) -> None:
    path = torchvision_onnx("shufflenet_v2_x1_0", 64)
    res = prune_onnx(path, ratio=0.3)
    original = load_onnx_model(path).original
    feeds = random_inputs(original)
    light = run_onnx(mask_removed_channels(original, res.plan.removed_channels, with_weights=False), feeds,
                     weights_from=original)
    full = run_onnx(mask_removed_channels(original, res.plan.removed_channels), feeds)
    unmasked = run_onnx(original, feeds)
    assert relative_error(full[0], light[0])[0] == 0.0
    assert relative_error(full[0], unmasked[0])[0] > 1e-3  # the masks really are applied


def test_external_data_writer_leaves_the_model_intact(torchvision_onnx, tmp_path) -> None:
    original = load_onnx_model(torchvision_onnx("resnet18", 32)).original
    before = [len(t.raw_data) for t in original.graph.initializer]
    save_with_external_data(original, tmp_path / "m.onnx", "m.onnx.data")
    assert [len(t.raw_data) for t in original.graph.initializer] == before  # caller's proto untouched
    reloaded = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(str(tmp_path / "m.onnx"), full_check=True)
    feeds = random_inputs(original)
    a, b = run_onnx(original, feeds), run_onnx(reloaded, feeds)
    assert np.array_equal(a[0], b[0])
