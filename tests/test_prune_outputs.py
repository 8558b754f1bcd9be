"""``prune --plot`` and ``prune --emit-library``: the extra outputs, written whole or not at all."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from hwprune_fx.oracle import run_onnx
from tests.onnx_builders import export

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwprune_fx.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "HWPRUNE_FX_DEBUG": "", "TVM_NUM_THREADS": "1"})


class TinyConvNet(nn.Module):
    """Three convs at 16x16 with two prunable groups of 32 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(32, 32, 3, padding=1), nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c3(torch.relu(self.c2(torch.relu(self.c1(x)))))


class TwoConvs(nn.Module):
    """Conv 8->16 + Relu, Conv 16->8 + Relu at 8x8 (the TVM build test's network)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(8, 16, 3, padding=1), nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.c2(torch.relu(self.c1(x))))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(TinyConvNet(), (1, 3, 16, 16), tmp_path_factory.mktemp("tiny") / "tiny.onnx")


def test_plot_writes_png_and_layers_before_after(tiny: Path, tmp_path: Path) -> None:
    out, rep, png = tmp_path / "p.onnx", tmp_path / "r.json", tmp_path / "plot.png"
    res = run_cli("prune", str(tiny), "--budget", "80%", "--best-effort", "--repeat", "5", "-o", str(out),
                  "--report", str(rep), "--plot", str(png), "--cache-dir", str(tmp_path / "cache"), "-q")
    assert res.returncode == 0, res.stderr
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 1000
    report = json.loads(rep.read_text())
    assert report["plot"] == str(png) and report["steps"]
    layers = report["layers"]
    names = {n.name for n in onnx.load(str(tiny)).graph.node if n.op_type == "Conv"}
    assert {r["layer"] for r in layers} == names  # matched by name, every conv on both sides
    for r in layers:  # numbers on both sides; no wall-clock comparison between them
        assert r["before_ms"] > 0 and r["after_ms"] > 0
        assert r["after_channels"][1] <= r["before_channels"][1]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_plot_from_arguments_and_without_steps(tmp_path: Path) -> None:
    from hwprune_fx.emit.prune_plot import plot_prune

    png = plot_prune({"target": "ort-cpu"}, tmp_path / "a.png", {"conv1": 2.0, "conv2": 1.0},
                     [{"layer": "conv1", "ms": 1.5}, {"layer": "conv3", "ms": 0.5}])
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_emit_library_needs_tvm_target(tiny: Path, tmp_path: Path) -> None:
    out, lib = tmp_path / "p.onnx", tmp_path / "m.so"
    res = run_cli("prune", str(tiny), "--budget", "80%", "--target", "ort-cpu", "-o", str(out),
                  "--emit-library", str(lib))
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--target tvm-llvm" in lines[0], res.stderr
    assert list(tmp_path.iterdir()) == []


def test_plot_output_checked_before_the_work(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.onnx"
    res = run_cli("prune", str(tiny), "--ratio", "0.5", "-o", str(out), "--plot", str(tmp_path / "nope" / "x.png"))
    assert res.returncode == 2 and "does not exist" in res.stderr
    res = run_cli("prune", str(tiny), "--ratio", "0.5", "-o", str(out), "--plot", str(out))
    assert res.returncode == 2 and "same file" in res.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_emit_library_loads_in_a_fresh_process_and_matches_onnxruntime(tmp_path: Path) -> None:
    pytest.importorskip("tvm")
    model = export(TwoConvs(), (1, 8, 8, 8), tmp_path / "two.onnx")
    out, lib, rep = tmp_path / "p.onnx", tmp_path / "m.so", tmp_path / "r.json"
    res = run_cli("prune", str(model), "--ratio", "0.5", "--target", "tvm-llvm", "--tune-trials", "4",
                  "--cache-dir", str(tmp_path / "cache"), "-o", str(out), "--emit-library", str(lib),
                  "--report", str(rep), "-q")
    assert res.returncode == 0, res.stderr
    assert json.loads(rep.read_text())["library"] == str(lib) and lib.stat().st_size > 0
    pruned = onnx.load(str(out))
    assert min(t.dims[0] for t in pruned.graph.initializer if len(t.dims) == 4) == 8  # 16 -> 8 channels

    x = np.random.default_rng(5).standard_normal((1, 8, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = ("import sys, numpy as np, tvm\n"
              "from tvm import relax\n"
              "vm = relax.VirtualMachine(tvm.runtime.load_module(sys.argv[1]), tvm.cpu())\n"
              "np.save(sys.argv[3], vm['main'](tvm.runtime.tensor(np.load(sys.argv[2]))).numpy())\n")
    subprocess.run([sys.executable, "-c", script, str(lib), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                   check=True, timeout=180, env={**os.environ, "TVM_NUM_THREADS": "1"})
    expected = run_onnx(pruned, {pruned.graph.input[0].name: x})[0]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-4, atol=1e-4)
