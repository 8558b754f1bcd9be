"""``hwprune-fx profile`` and ``targets``: tables for people, JSON for programs, a PNG staircase."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwprune_fx.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "HWPRUNE_FX_CACHE": str(cache), "HWPRUNE_FX_DEBUG": ""})


@pytest.fixture(scope="module")
def r18(torchvision_onnx) -> Path:
    return torchvision_onnx("resnet18", 32)


def test_profile_table_and_json(r18: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    res = run_cli("profile", str(r18), "--repeat", "3", "--json", str(out), "-q", cache=tmp_path / "c")
    assert res.returncode == 0, res.stderr
    assert "whole network" in res.stdout and "sum of layers" in res.stdout
    data = json.loads(out.read_text())
    assert len(data["layers"]) == 21 and data["whole"]["threads"] == 1
    assert all(r["ms"] > 0 and r["macs"] > 0 for r in data["layers"])
    assert data["sum_of_layers_ms"] == pytest.approx(sum(r["ms"] for r in data["layers"]))


def test_profile_sweep_plot(r18: Path, tmp_path: Path) -> None:
    png, js = tmp_path / "s.png", tmp_path / "s.json"
    res = run_cli("profile", str(r18), "--sweep", "layer2.0.conv1", "--points", "4", "--repeat", "3",
                  "--plot", str(png), "--json", str(js), "-q", cache=tmp_path / "c")
    assert res.returncode == 0, res.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sweep = json.loads(js.read_text())["sweep"]
    assert sweep["counts"][0] == 1 and sweep["counts"][-1] == 128 and len(sweep["ms"]) == len(sweep["counts"])


@pytest.mark.parametrize("args,needle", [
    (["--target", "fpga-9000"], "unknown target"),
    (["--sweep", "no.such.layer"], "matches no layer"),
    (["--plot", "x.png"], "--sweep"),
    (["--rpc-key", "k"], "tvm-llvm"),
])
def test_profile_bad_input(r18: Path, tmp_path: Path, args: list[str], needle: str) -> None:
    res = run_cli("profile", str(r18), *args, cache=tmp_path / "c")
    assert res.returncode != 0 and needle in res.stderr and "Traceback" not in res.stderr


def test_targets_lists_ort_cpu(tmp_path: Path) -> None:
    res = run_cli("targets", cache=tmp_path)
    assert res.returncode == 0 and "ort-cpu" in res.stdout and "torch" in res.stdout
