"""The registered ``merge-similar`` pass: planted near-copies go, the network stays the same."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from hwprune_fx.calib import CalibrationData
from hwprune_fx.errors import UserError
from hwprune_fx.oracle import run_onnx
from hwprune_fx.pass_infra import Pipeline
from hwprune_fx.zoo import export_onnx


def _net(tmp_path, plant: bool) -> str:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1), nn.ReLU(),
                      nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    if plant:
        with torch.no_grad():
            m[0].weight[5] = 2 * m[0].weight[3]
            m[0].bias[5] = 2 * m[0].bias[3]
    path = str(tmp_path / "net.onnx")
    export_onnx(m, (1, 3, 8, 8), path)
    return path


def _calib() -> CalibrationData:
    return CalibrationData({"input": np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)}, "t")


def test_planted_copy_is_merged_and_output_unchanged(tmp_path):
    path = _net(tmp_path, plant=True)
    res = Pipeline.parse("merge-similar(max_residual=0.01)").run(path, calib=_calib())
    rec = res.record("merge-similar")
    assert rec.modified
    assert [(m["c"], m["k"], round(m["alpha"], 4)) for m in rec.details["merges"]] == [(5, 3, 2.0)]
    dims = {tuple(i.dims) for i in res.model.graph.initializer}
    assert (15, 3, 3, 3) in dims and (8, 15, 3, 3) in dims
    x = {"input": np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    np.testing.assert_allclose(run_onnx(res.model, x)[0], run_onnx(onnx.load(path), x)[0], rtol=1e-4, atol=1e-5)


def test_nothing_similar_means_not_modified(tmp_path):
    path = _net(tmp_path, plant=False)
    res = Pipeline.parse("merge-similar(max_residual=0.001)").run(path, calib=_calib())
    assert not res.record("merge-similar").modified
    assert res.record("merge-similar").details["merges"] == []


def test_needs_calibration(tmp_path):
    with pytest.raises(UserError, match="needs calibration data"):
        Pipeline.parse("merge-similar").run(_net(tmp_path, plant=True))
