"""The CLI end to end: happy path with its report, and every bad input as one clean line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from hwprune_fx.oracle import onnx_oracle, random_inputs


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwprune_fx.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "HWPRUNE_FX_DEBUG": ""})


@pytest.fixture(scope="module")
def r18(torchvision_onnx) -> Path:
    return torchvision_onnx("resnet18", 64)


def test_prune_writes_exact_model_and_independent_report(r18: Path, tmp_path: Path) -> None:
    out, rep = tmp_path / "p.onnx", tmp_path / "r.json"
    res = run_cli("prune", str(r18), "--ratio", "0.3", "-o", str(out), "--report", str(rep), "-q")
    assert res.returncode == 0, res.stderr
    assert "oracle: exact" in res.stdout
    report = json.loads(rep.read_text())
    for key in ("input", "output", "params_before", "params_after", "macs_before", "macs_after", "removed_channels"):
        assert key in report
    assert report["params_after"] < report["params_before"] and report["macs_after"] < report["macs_before"]
    pruned = onnx.load(str(out))
    onnx.checker.check_model(pruned, full_check=True)
    # an independent check from the report alone: zero those channels in the ORIGINAL file
    original = onnx.load(str(r18))
    removed = report["removed_channels"]
    assert removed and all(set(e) == {"axis", "indices"} for e in removed.values())
    assert onnx_oracle(original, pruned, removed, random_inputs(original, seed=3)).exact


def test_analyze_table_and_json(r18: Path) -> None:
    res = run_cli("analyze", str(r18))
    assert res.returncode == 0, res.stderr
    assert "prunable" in res.stdout and "graph output" in res.stdout
    data = json.loads(run_cli("analyze", str(r18), "--json").stdout)
    assert data["summary"]["prunable_groups"] == 12  # resnet18: stem/4 stages + 8 block-internal convs
    assert all({"id", "size", "prunable", "tensors", "reasons"} <= set(g) for g in data["groups"])


def _assert_clean_failure(res: subprocess.CompletedProcess, needle: str) -> None:
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) >= 1 and needle.lower() in res.stderr.lower(), res.stderr


def test_missing_file(tmp_path: Path) -> None:
    out = tmp_path / "o.onnx"
    _assert_clean_failure(run_cli("prune", str(tmp_path / "nope.onnx"), "--ratio", "0.3", "-o", str(out)), "no such file")
    assert not out.exists()


def test_not_an_onnx_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_text("this is not a model\n" * 20)
    out = tmp_path / "o.onnx"
    _assert_clean_failure(run_cli("prune", str(bad), "--ratio", "0.3", "-o", str(out)), "not")
    assert not out.exists()
    assert len(run_cli("analyze", str(bad)).stderr.strip().splitlines()) == 1


def test_truncated_file(r18: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(r18.read_bytes()[: r18.stat().st_size // 2])
    out = tmp_path / "o.onnx"
    _assert_clean_failure(run_cli("prune", str(cut), "--ratio", "0.3", "-o", str(out)), "onnx")
    assert not out.exists()


@pytest.mark.parametrize("ratio", ["0", "1", "1.5", "-0.2", "abc"])
def test_ratio_out_of_range(r18: Path, tmp_path: Path, ratio: str) -> None:
    out = tmp_path / "o.onnx"
    res = run_cli("prune", str(r18), "--ratio", ratio, "-o", str(out))
    _assert_clean_failure(res, "ratio")
    assert not out.exists()


def test_dynamic_shape_needs_input_shape(tmp_path: Path) -> None:
    import torch
    from tests.onnx_builders import ConvBnRelu

    path = tmp_path / "dyn.onnx"
    torch.onnx.export(ConvBnRelu().eval(), (torch.randn(1, 3, 8, 8),), str(path), dynamo=False,
                      input_names=["input"], output_names=["out"],
                      dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}, "out": {0: "n"}})
    out = tmp_path / "o.onnx"
    _assert_clean_failure(run_cli("prune", str(path), "--ratio", "0.3", "-o", str(out)), "--input-shape")
    assert not out.exists()
    ok = run_cli("prune", str(path), "--ratio", "0.5", "-o", str(out), "--input-shape", "input:1x3x8x8", "-q")
    assert ok.returncode == 0, ok.stderr
    assert out.exists()


def test_output_equal_to_input(r18: Path, tmp_path: Path) -> None:
    copy = tmp_path / "m.onnx"
    copy.write_bytes(r18.read_bytes())
    before = copy.read_bytes()
    _assert_clean_failure(run_cli("prune", str(copy), "--ratio", "0.3", "-o", str(copy)), "input file")
    assert copy.read_bytes() == before


def test_unwritable_output_directory(r18: Path, tmp_path: Path) -> None:
    _assert_clean_failure(run_cli("prune", str(r18), "--ratio", "0.3", "-o", str(tmp_path / "no" / "dir" / "o.onnx")),
                          "does not exist")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            # root ignores permission bits: use a path below a regular file instead
            target = r18 / "o.onnx"
        else:
            target = locked / "o.onnx"
        res = run_cli("prune", str(r18), "--ratio", "0.3", "-o", str(target))
        _assert_clean_failure(res, "output directory")
        assert not target.exists()
    finally:
        locked.chmod(0o700)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))
