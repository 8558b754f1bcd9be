"""``hwprune_fx.bench`` and ``hwprune-fx bench`` on a tiny conv net: rows, fidelity, JSON, errors.

No wall-clock assertions: latencies are only checked to be positive and ordered (p10 <= median <= p90).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hwprune_fx
from hwprune_fx.benchmark import ORIGINAL, fidelity
from hwprune_fx.errors import UserError

EXACT = "fold-bn,cleanup"
RATIO = "fold-bn,prune-ratio(ratio=0.5),cleanup"


def tiny_classifier(path: Path) -> Path:
    """Conv 3->16 + BN + Relu, Conv 16->16 + BN + Relu, GlobalAveragePool, Flatten, Gemm 16->10 at 8x8."""
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int, positive: bool = False) -> onnx.TensorProto:
        v = rng.random(shape) + 0.5 if positive else rng.standard_normal(shape)
        return numpy_helper.from_array(v.astype(np.float32), name)

    inits = [init("w1", 16, 3, 3, 3), init("w2", 16, 16, 3, 3), init("fw", 10, 16), init("fb", 10)]
    nodes = []
    for i, (x, c) in enumerate((("x", 16), ("r1", 16)), start=1):
        inits += [init(f"s{i}", c, positive=True), init(f"b{i}", c), init(f"m{i}", c), init(f"v{i}", c, positive=True)]
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("BatchNormalization", [f"c{i}", f"s{i}", f"b{i}", f"m{i}", f"v{i}"], [f"n{i}"]),
                  helper.make_node("Relu", [f"n{i}"], [f"r{i}"])]
    nodes += [helper.make_node("GlobalAveragePool", ["r2"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
              helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_classifier(tmp_path_factory.mktemp("bench") / "tiny.onnx")


@pytest.fixture(scope="module")
def result(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> hwprune_fx.benchmark.BenchResult:
    cache = tmp_path_factory.mktemp("bench-cache")
    unreachable = "prune(budget=1us,search=uniform),cleanup"
    return hwprune_fx.bench(tiny, [EXACT, RATIO, unreachable], repeat=2, runs_per_round=3, warmup=1,
                            search_repeat=3, cache_dir=cache)


def test_one_row_per_pipeline_after_the_original(result) -> None:
    assert [r.pipeline for r in result.rows] == [ORIGINAL, EXACT, RATIO,
                                                 "prune(budget=1us,search=uniform),cleanup"]
    for row in result.rows[:3]:
        assert row.ok and len(row.round_ms) == 2
        assert 0 < row.p10_ms <= row.median_ms <= row.p90_ms
        assert row.speedup is not None and row.speedup > 0


def test_exact_pipeline_keeps_every_prediction(result) -> None:
    row = result.row(EXACT)
    assert row.modified  # the two BatchNorms were folded
    assert row.fidelity["top1_agreement"] == 1.0
    assert row.fidelity["max_abs_error"] < 1e-4 and row.fidelity["kl_div"] < 1e-8
    assert (row.params, row.macs) != (None, None) and row.macs == result.original.macs
    assert [p["name"] for p in row.passes] == ["fold-bn", "cleanup"]
    assert row.passes[0]["modified"] and all(p["seconds"] >= 0 for p in row.passes)
    assert row.predicted_from == "macs" and row.predicted_ms == pytest.approx(result.original.median_ms)


def test_ratio_pipeline_is_smaller_and_measured_against_the_original(result) -> None:
    row = result.row(RATIO)
    assert row.macs < result.original.macs and row.params < result.original.params
    assert 0.0 <= row.fidelity["top1_agreement"] <= 1.0 and row.fidelity["max_abs_error"] > 0
    assert row.predicted_from == "macs"
    assert row.predicted_ms == pytest.approx(result.original.median_ms * row.macs / result.original.macs)
    # LatencyInstrument: the input, then one record per pass
    assert [r["pass_name"] for r in row.latency_records] == ["input", "fold-bn", "prune-ratio", "cleanup"]


def test_a_failing_pipeline_is_a_row_with_its_error(result) -> None:
    row = result.rows[3]
    assert not row.ok and "UnreachableBudget" in row.error and row.median_ms is None
    assert "error:" in result.table()


def test_json_form_and_table(result) -> None:
    data = json.loads(json.dumps(result.to_dict()))
    assert data["target"] == "ort-cpu" and data["repeat"] == 2 and len(data["rows"]) == 4
    row = data["rows"][1]
    assert set(row) >= {"pipeline", "ok", "error", "measured", "predicted", "params", "macs", "fidelity", "passes"}
    assert set(row["measured"]) == {"median_ms", "p10_ms", "p90_ms", "round_ms"}
    assert set(row["fidelity"]) == {"top1_agreement", "max_abs_error", "kl_div"}
    table = result.table()
    assert EXACT in table and "time per pass" in table


def test_fidelity_of_known_outputs() -> None:
    ref = [np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])]
    same = fidelity(ref, ref)
    assert same == {"top1_agreement": 1.0, "max_abs_error": 0.0, "kl_div": 0.0}
    flipped = fidelity(ref, [np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])])
    assert flipped["top1_agreement"] == 0.5 and flipped["max_abs_error"] == 2.0 and flipped["kl_div"] > 0


def test_bad_pipeline_fails_before_any_work(tiny: Path) -> None:
    with pytest.raises(UserError, match="unknown pass 'fold-bm'"):
        hwprune_fx.bench(tiny, [EXACT, "fold-bm,cleanup"])


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwprune_fx.cli", "bench", *args], capture_output=True,
                          text=True, cwd=cwd)


def test_cli_bad_pipeline_is_one_line_and_writes_nothing(tiny: Path, tmp_path: Path) -> None:
    res = _cli(str(tiny), "--pipeline", EXACT, "--pipeline", "prune-ratio(ratio=2)", "--json", "out.json",
               "--plot", "out.png", cwd=tmp_path)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "ratio" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_json_and_plot(tiny: Path, tmp_path: Path) -> None:
    res = _cli(str(tiny), "--pipeline", EXACT, "--pipeline", RATIO, "--repeat", "2", "--runs", "2",
               "--cache-dir", str(tmp_path / "cache"), "--json", "out.json", "--plot", "out.png", "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # -q: no progress lines
    assert EXACT in res.stdout and "median ms" in res.stdout
    data = json.loads((tmp_path / "out.json").read_text())
    assert [r["pipeline"] for r in data["rows"]] == [ORIGINAL, EXACT, RATIO]
    assert data["rows"][1]["fidelity"]["top1_agreement"] == 1.0
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibration_data_are_the_fidelity_inputs(tiny: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(1).standard_normal((5, 3, 8, 8)).astype(np.float32))
    res = hwprune_fx.bench(tiny, [EXACT], calib=tmp_path / "calib.npz", repeat=1, runs_per_round=1, warmup=0)
    assert res.fidelity_inputs.startswith("calibration data") and "5 samples" in res.fidelity_inputs
    assert res.row(EXACT).fidelity["top1_agreement"] == 1.0
