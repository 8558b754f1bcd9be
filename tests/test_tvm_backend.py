"""The ``tvm-llvm`` backend against the real TVM: tuned output, database reuse, export, RPC.

One tiny conv (8->8, 3x3, 16x16) is tuned once per module with a handful of trials; the
other tests reuse that database, as a pruning run would.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwprune_fx.errors import BackendError, UserError
from hwprune_fx.oracle import run_onnx
from hwprune_fx.targets import TimingConfig, create_backend
from hwprune_fx.targets.tvm_env import cpu_flags, detect_mcpu, process_cpus

TRIALS = 4
TIMING = TimingConfig(warmup=2, repeat=10, threads=1)
SHAPE = (1, 8, 16, 16)
#: the conv of ``conv_relu``, and the transposes into and out of NHWC (``tvm_relax.CONV_LAYOUT``)
#: at the network's ends: three workloads
CONV_NET_WORKLOADS = 3


def conv_relu(seed: int, shape: tuple[int, ...] = SHAPE) -> onnx.ModelProto:
    """Conv 8->8 3x3 (pad 1) + Relu on ``shape``; ``seed`` only changes the weights."""
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"])],
        "conv_relu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))], [weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def feeds(seed: int = 1, shape: tuple[int, ...] = SHAPE) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, object]:
    """A backend that has tuned the conv, its cache dir, and the first measurement."""
    cache = tmp_path_factory.mktemp("tvm-cache")
    lines: list[str] = []
    backend = create_backend("tvm-llvm", timing=TIMING, cache_dir=cache, tune_trials=TRIALS, progress=lines.append)
    measurement = backend.measure(conv_relu(0), feeds())
    backend.tuning_lines = lines
    return backend, cache, measurement


def test_tuned_conv_matches_onnxruntime_and_is_timed(tuned: tuple) -> None:
    backend, _, measurement = tuned
    report = backend.tuning_report()
    assert (report.workloads_total, report.already_in_database, report.newly_tuned) == (CONV_NET_WORKLOADS, 0,
                                                                                         CONV_NET_WORKLOADS)
    assert report.still_untuned == 0 and report.tuning_seconds > 0
    out = backend.run(conv_relu(0), feeds())
    assert len(out) == 1
    np.testing.assert_allclose(out[0], run_onnx(conv_relu(0), feeds())[0], rtol=1e-4, atol=1e-4)
    assert measurement.median_ms > 0 and measurement.p10_ms <= measurement.median_ms <= measurement.p90_ms
    assert measurement.repeats == TIMING.repeat and measurement.threads == 1
    settings = measurement.settings
    assert settings["tvm_num_threads"] == 1 and settings["device_threads"] == 1
    assert settings["llvm_target"]["kind"] == "llvm" and settings["llvm_target"]["num-cores"] == 1
    assert settings["llvm_target"]["mcpu"] not in ("", "native", "generic")
    assert settings["tune_trials"] == TRIALS and settings["untuned_workloads"] == 0
    assert settings["tvm"].startswith("0.27") and settings["conv_layout"] == "NHWC/HWIO"
    assert list(backend.database_dir().glob("database_tuning_record.json"))
    # TVM's pool must not have pinned the host process (and so pytest) to one core
    assert frozenset(os.sched_getaffinity(0)) == process_cpus()
    # the tuning said what it was doing, one line per workload
    assert [line.split(":")[0] for line in backend.tuning_lines] == [f"TVM tuning {i}/{CONV_NET_WORKLOADS}"
                                                                      for i in range(1, CONV_NET_WORKLOADS + 1)]
    assert all(f"{TRIALS} trials" in line for line in backend.tuning_lines)
    assert sum("conv2d" in line for line in backend.tuning_lines) == 1


def test_same_shapes_other_weights_reuse_the_database(tuned: tuple) -> None:
    _, cache, _ = tuned
    lines: list[str] = []
    backend = create_backend("tvm-llvm", timing=TIMING, cache_dir=cache, tune_trials=TRIALS, progress=lines.append)
    pruned_like = conv_relu(7)
    measurement = backend.measure(pruned_like, feeds())
    report = backend.tuning_report()
    assert (report.workloads_total, report.already_in_database, report.newly_tuned) == (CONV_NET_WORKLOADS,
                                                                                         CONV_NET_WORKLOADS, 0)
    assert lines == []   # nothing tuned, nothing announced
    assert report.tuning_seconds == 0.0 and measurement.median_ms > 0
    np.testing.assert_allclose(backend.run(pruned_like, feeds(3))[0], run_onnx(pruned_like, feeds(3))[0],
                               rtol=1e-4, atol=1e-4)


def two_convs() -> onnx.ModelProto:
    """Conv 8->8 + Relu, then conv 8->16: two workloads of different shapes."""
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
             for name, shape in (("w1", (8, 8, 3, 3)), ("w2", (16, 8, 3, 3)))]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1])],
        "two_convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_missing_workloads_are_tuned_one_after_another_into_one_database(tuned: tuple) -> None:
    """Workloads are tuned in turn (no candidate is timed while the next task compiles); the
    one the database already has is not tuned again, and the network runs tuned and exact."""
    _, cache, _ = tuned
    lines: list[str] = []
    backend = create_backend("tvm-llvm", timing=TIMING, cache_dir=cache, tune_trials=TRIALS, progress=lines.append)
    backend.measure(two_convs(), feeds())
    report = backend.tuning_report()
    # the first conv and the transpose of the input into NHWC are conv_relu's
    assert report.already_in_database == 2 and report.still_untuned == 0
    assert report.newly_tuned == report.workloads_total - 2 >= 1
    assert [line.split(":")[0] for line in lines] == [f"TVM tuning {i}/{report.newly_tuned}"
                                                      for i in range(1, report.newly_tuned + 1)]
    assert all(f"2 of {report.workloads_total} workloads already in the database" in line for line in lines)
    np.testing.assert_allclose(backend.run(two_convs(), feeds())[0], run_onnx(two_convs(), feeds())[0],
                               rtol=1e-4, atol=1e-4)


def test_trials_are_measured_in_batches_of_tune_batch(tmp_path: Path) -> None:
    """``tune_batch`` is what MetaSchedule sends to be measured at a time: 4 trials in batches of
    2 are two batches (the cost model refitted in between), as its own task log records."""
    backend = create_backend("tvm-llvm", timing=TIMING, cache_dir=tmp_path, tune_trials=TRIALS, tune_batch=2)
    measurement = backend.measure(conv_relu(0), feeds())
    assert measurement.settings["tune_batch"] == 2 and backend.tuning_report().still_untuned == 0
    logs = "".join(p.read_text() for p in (backend.database_dir() / "logs").glob("*conv*.log"))
    assert re.findall(r"Sending (\d+) candidates?\(s\) for measurement", logs) == ["2", "2"]
    with pytest.raises(UserError, match="tune_batch"):
        create_backend("tvm-llvm", cache_dir=tmp_path, tune_batch=0)


def test_convs_stay_nchw_when_asked_one_workload_and_exact(tmp_path: Path) -> None:
    """``conv_layout=None`` compiles the convs as imported: no transposes, one workload."""
    backend = create_backend("tvm-llvm", timing=TIMING, cache_dir=tmp_path, tune_trials=TRIALS, conv_layout=None)
    out = backend.run(conv_relu(0), feeds())
    assert backend.tuning_report().workloads_total == 1 and backend.settings()["conv_layout"] == "NCHW/OIHW"
    np.testing.assert_allclose(out[0], run_onnx(conv_relu(0), feeds())[0], rtol=1e-4, atol=1e-4)


def test_exported_library_runs_in_a_fresh_process(tuned: tuple, tmp_path: Path) -> None:
    backend, _, _ = tuned
    lib = backend.export_library(conv_relu(0), tmp_path / "conv.so")
    assert lib == tmp_path / "conv.so" and lib.stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir()] == ["conv.so"]  # no temporary left behind
    np.save(tmp_path / "x.npy", feeds()["x"])
    script = (
        "import sys, numpy as np, tvm\n"
        "from tvm import relax\n"
        "vm = relax.VirtualMachine(tvm.runtime.load_module(sys.argv[1]), tvm.cpu())\n"
        "np.save(sys.argv[3], vm['main'](tvm.runtime.tensor(np.load(sys.argv[2]))).numpy())\n")
    subprocess.run([sys.executable, "-c", script, str(lib), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                   check=True, timeout=120, env={**os.environ, "TVM_NUM_THREADS": "1"})
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), backend.run(conv_relu(0), feeds())[0])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "TVM_NUM_THREADS": "1"}, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process started here and the session children it forked."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _free_servers(port: int, key: str) -> int:
    """Free servers under ``key`` at the loopback tracker on ``port``."""
    from tvm import rpc

    client = rpc.connect_tracker("127.0.0.1", port)
    try:
        return int(client.summary()["queue_info"].get(key, {}).get("free", 0))
    finally:
        client.close()


def _wait(ready: Callable[[], bool], procs: list[subprocess.Popen], logs: list[Path]) -> None:
    deadline = time.monotonic() + 90
    while not ready():
        for proc, log in zip(procs, logs):
            assert proc.poll() is None, f"{log.name} exited:\n" + log.read_text()[-2000:]
        assert time.monotonic() < deadline, "RPC tracker/server not ready after 90 s"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def rpc_tracker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A loopback tracker with one CPU server under key ``test`` and the server's log.

    The tracker is up before the server starts (TVM's server otherwise waits 5 s between
    connection attempts); both are always torn down.
    """
    logs = tmp_path_factory.mktemp("rpc-logs")
    tracker_port, server_port = _free_port(), _free_port()
    procs: list[subprocess.Popen] = []
    try:
        procs.append(_spawn(["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(tracker_port),
                             "--port-end", str(tracker_port + 1)], logs / "tracker.log"))
        _wait(lambda: _listening(tracker_port), procs, [logs / "tracker.log"])
        procs.append(_spawn(["tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(server_port),
                             "--port-end", str(server_port + 1), "--tracker", f"127.0.0.1:{tracker_port}",
                             "--key", "test", "--custom-addr", "127.0.0.1"], logs / "server.log"))
        _wait(lambda: _free_servers(tracker_port, "test") > 0, procs, [logs / "tracker.log", logs / "server.log"])
        yield f"127.0.0.1:{tracker_port}", logs / "server.log"
    finally:
        for proc in reversed(procs):
            _stop(proc)


def test_rpc_measures_on_the_remote_device(tuned: tuple, rpc_tracker: tuple[str, Path]) -> None:
    _, cache, _ = tuned
    tracker, server_log = rpc_tracker
    backend = create_backend("tvm-llvm", timing=TIMING, cache_dir=cache, tune_trials=TRIALS,
                             rpc_tracker=tracker, rpc_key="test")
    measurement = backend.measure(conv_relu(0), feeds())
    assert backend.tuning_report().newly_tuned == 0  # the database is shared with local runs
    assert measurement.median_ms > 0 and measurement.repeats == TIMING.repeat
    assert measurement.settings["rpc"] == f"test@{tracker}"
    assert measurement.settings["device_threads"] == 1
    remote = backend.run(conv_relu(0), feeds(4))
    np.testing.assert_allclose(remote[0], run_onnx(conv_relu(0), feeds(4))[0], rtol=1e-4, atol=1e-4)
    assert server_log.read_text().count("load_module") == 2  # measure and run both went remote


def test_rpc_tunes_a_new_workload_on_the_remote_device(rpc_tracker: tuple[str, Path], tmp_path: Path) -> None:
    tracker, server_log = rpc_tracker
    before = server_log.read_text()
    shape = (1, 8, 8, 8)
    backend = create_backend("tvm-llvm", timing=TIMING, cache_dir=tmp_path, tune_trials=2,
                             rpc_tracker=tracker, rpc_key="test")
    out = backend.run(conv_relu(0, shape), feeds(2, shape))
    report = backend.tuning_report()
    assert (report.workloads_total, report.newly_tuned, report.still_untuned) == (CONV_NET_WORKLOADS,
                                                                                   CONV_NET_WORKLOADS, 0)
    np.testing.assert_allclose(out[0], run_onnx(conv_relu(0, shape), feeds(2, shape))[0], rtol=1e-4, atol=1e-4)
    new_log = server_log.read_text()[len(before):]
    assert "tvm_tmp_mod" in new_log  # MetaSchedule's candidates were loaded and timed remotely
    assert "hwprune_" in new_log  # and so was the compiled model


def test_rpc_unknown_key_is_a_user_error(rpc_tracker: tuple[str, Path], tmp_path: Path) -> None:
    backend = create_backend("tvm-llvm", timing=TIMING, cache_dir=tmp_path, tune_trials=0,
                             allow_untuned=True, rpc_tracker=rpc_tracker[0], rpc_key="no-such-device")
    start = time.monotonic()
    with pytest.warns(RuntimeWarning), pytest.raises(UserError, match="no-such-device"):
        backend.run(conv_relu(0), feeds())
    assert time.monotonic() - start < 15


def test_unreachable_tracker_is_a_quick_user_error(tmp_path: Path) -> None:
    port = _free_port()  # closed again: nothing listens there
    backend = create_backend("tvm-llvm", timing=TIMING, cache_dir=tmp_path, tune_trials=0,
                             allow_untuned=True, rpc_tracker=f"127.0.0.1:{port}", rpc_key="test")
    start = time.monotonic()
    with pytest.warns(RuntimeWarning), pytest.raises(UserError, match="unreachable") as info:
        backend.measure(conv_relu(0), feeds())
    assert time.monotonic() - start < 15
    assert "\n" not in str(info.value)


def test_malformed_tracker_is_a_user_error() -> None:
    with pytest.raises(UserError, match="HOST:PORT"):
        create_backend("tvm-llvm", rpc_tracker="localhost", rpc_key="test")
    with pytest.raises(UserError, match="rpc_key"):
        create_backend("tvm-llvm", rpc_tracker="127.0.0.1:9190")


def test_untuned_workload_is_refused(tmp_path: Path) -> None:
    backend = create_backend("tvm-llvm", timing=TIMING, cache_dir=tmp_path, tune_trials=0)
    with pytest.raises(BackendError, match=f"{CONV_NET_WORKLOADS} of {CONV_NET_WORKLOADS} TVM workloads"):
        backend.measure(conv_relu(0), feeds())
    assert backend.tuning_report().still_untuned == CONV_NET_WORKLOADS
    assert not list((tmp_path / "measurements").glob("*.json"))  # nothing was cached either


def test_untuned_workload_allowed_is_flagged(tmp_path: Path) -> None:
    backend = create_backend("tvm-llvm", timing=TIMING, cache_dir=tmp_path, tune_trials=0, allow_untuned=True)
    with pytest.warns(RuntimeWarning, match=f"{CONV_NET_WORKLOADS} of {CONV_NET_WORKLOADS} TVM workloads"):
        measurement = backend.measure(conv_relu(0), feeds())
    assert measurement.settings["untuned_workloads"] == CONV_NET_WORKLOADS
    assert measurement.settings["allow_untuned"] is True
    np.testing.assert_allclose(backend.run(conv_relu(0), feeds())[0], run_onnx(conv_relu(0), feeds())[0],
                               rtol=1e-4, atol=1e-4)


def test_cpu_detection_never_promises_features_the_cpu_lacks() -> None:
    import tvm

    flags = cpu_flags()
    assert cpu_flags("processor : 0\nflags\t\t: fpu sse2 avx2\n") == {"fpu", "sse2", "avx2"}
    host = detect_mcpu(tvm)
    assert host not in ("", "native", "generic")
    assert tvm.get_global_func("target.llvm_is_valid_cpu")(host, "")
    if "avx2" in flags:  # an x86 host: hide AVX2 as a hypervisor might
        assert detect_mcpu(tvm, flags - {"avx2"}) == "x86-64-v2"
        assert detect_mcpu(tvm, {"sse2"}) == "x86-64"


def test_cli_and_backend_registry_do_not_import_tvm() -> None:
    code = ("import sys\n"
            "from click.testing import CliRunner\n"
            "from hwprune_fx.cli import cli\n"
            "from hwprune_fx.targets import available_backends\n"
            "assert 'tvm-llvm' in available_backends()\n"
            "for args in (['--help'], ['targets'], ['profile', '--help']):\n"
            "    assert CliRunner().invoke(cli, args).exit_code == 0, args\n"
            "assert 'tvm' not in sys.modules, 'tvm imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
