"""Timings that decide (the final check, confirmations) run in a fresh process where the target allows it."""
from __future__ import annotations

import os

import onnx
import pytest
import torch
from torch import nn

from tests.onnx_builders import export


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """A small conv net and a narrower one with the same input and output."""
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("pairs")

    def net(width: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 8, 3, padding=1)).eval()
    return (onnx.load(str(export(net(32), (1, 3, 32, 32), d / "wide.onnx"))),
            onnx.load(str(export(net(8), (1, 3, 32, 32), d / "narrow.onnx"))))


def _ort(repeat: int = 3):
    from hwprune_fx.targets import TimingConfig, create_backend

    return create_backend("ort-cpu", timing=TimingConfig(warmup=1, repeat=repeat, threads=1), use_cache=False)


def test_the_final_check_runs_in_another_process_not_this_ones_timer(pair, monkeypatch) -> None:
    """Timing in this process is scripted to a ratio of 5.0: the fresh process never sees that."""
    from hwprune_fx.search import final_check as fc
    from hwprune_fx.targets import side_by_side
    from hwprune_fx.targets.measurement import summarize

    monkeypatch.setattr(side_by_side, "measure_side_by_side",
                        lambda *a, **k: [summarize("ort-cpu", [1.0], 0, 1), summarize("ort-cpu", [5.0], 0, 1)])
    monkeypatch.setattr(fc, "FINAL_SECONDS", 0.05)
    check = fc.final_check(_ort(), *pair, pairs=3)
    assert check.process == "fresh" and check.pid != os.getpid()
    assert len(check.ratios) == 3 and 5.0 not in check.ratios
    assert all(m.target == "ort-cpu" and m.threads == 1 and m.settings["rounds"] >= 2
               for m in (check.base, check.final))
    assert check.to_dict()["final_check_process"] == "fresh"
    here = fc.final_check(_ort(), *pair, pairs=3, process="this")   # asked for: this process's (scripted) timer
    assert here.process == "this" and here.pid == os.getpid() and here.ratios == (5.0,) * 3


def test_a_backend_that_cannot_be_rebuilt_elsewhere_is_timed_here(pair, monkeypatch) -> None:
    from hwprune_fx.search import final_check as fc

    backend = _ort()
    monkeypatch.setattr(type(backend), "spawn_spec", lambda self: None)
    monkeypatch.setattr(fc, "FINAL_SECONDS", 0.05)
    check = fc.final_check(backend, *pair, pairs=1)
    assert check.process == "this" and check.pid == os.getpid() and len(check.ratios) == 1


def test_a_failing_fresh_process_is_a_one_line_backend_error(pair) -> None:
    from hwprune_fx.errors import BackendError
    from hwprune_fx.targets.fresh_process import time_sets_in_fresh_process

    spec = {"target": "no-such-target", "timing": {"warmup": 1, "repeat": 1, "threads": 1, "min_seconds": 0.0}}
    with pytest.raises(BackendError, match=r"fresh process failed \(exit 1\): .*unknown target 'no-such-target'") as err:
        time_sets_in_fresh_process(spec, list(pair), sets=1, rounds=2, seconds_per_model=0.0)
    assert "\n" not in str(err.value)


def test_the_spawn_spec_rebuilds_the_same_timing(pair) -> None:
    from hwprune_fx.targets import TimingConfig, create_backend

    backend = _ort(repeat=7)
    spec = backend.spawn_spec()
    again = create_backend(spec["target"], timing=TimingConfig(**spec["timing"]))
    assert again.settings() == backend.settings()


def test_prune_to_budget_refuses_an_unknown_final_check_process(pair, tmp_path) -> None:
    from hwprune_fx.errors import UserError
    from hwprune_fx.prune_budget import prune_to_budget

    with pytest.raises(UserError, match="final_check_process"):
        prune_to_budget(pair[0], "50%", final_check_process="elsewhere", cache_dir=tmp_path)


def test_a_fresh_process_times_every_model_it_is_given_in_every_set(pair) -> None:
    from hwprune_fx.targets.fresh_process import time_sets_in_fresh_process

    sets, pid = time_sets_in_fresh_process(_ort().spawn_spec(), [pair[0], pair[1], pair[0]], sets=2, rounds=3,
                                           seconds_per_model=0.0)
    assert pid != os.getpid() and len(sets) == 2
    assert all(len(one) == 3 and all(m.settings["rounds"] == 3 and m.repeats == 3 for m in one) for one in sets)


def test_a_block_runs_on_until_its_minimum_time_here_and_in_a_fresh_process(pair) -> None:
    """A fast network's block of 3 runs reads it slow (``side_by_side.BLOCK_SECONDS``): a block with
    ``min_seconds`` keeps running until that much was timed, and the fresh process's backend keeps it."""
    from hwprune_fx.oracle import random_inputs
    from hwprune_fx.targets import TimingConfig, create_backend
    from hwprune_fx.targets.fresh_process import time_sets_in_fresh_process

    timing = TimingConfig(warmup=1, repeat=3, threads=1, min_seconds=0.05)
    backend = create_backend("ort-cpu", timing=timing, use_cache=False)
    block = backend.block_timer(pair[1], random_inputs(pair[1], batch=1))()
    assert block.repeats > 3 and block.repeats * block.median_ms >= 0.8 * 50   # ms; 3 runs take ~0.1 ms
    sets, _ = time_sets_in_fresh_process(backend.spawn_spec(), list(pair), sets=1, rounds=2, seconds_per_model=0.0)
    assert all(m.settings["min_seconds"] == 0.05 and m.settings["repeat"] == 3 for m in sets[0])
