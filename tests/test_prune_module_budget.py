"""Budget path for torch modules: rounds, the finetune callback, a pruned module that trains."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import hwprune_fx
from hwprune_fx.errors import UserError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 48, 3, padding=1), nn.BatchNorm2d(48), nn.ReLU(),
                                  nn.Conv2d(48, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.Conv2d(64, 48, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))


def _widths(module: nn.Module) -> list[int]:
    return [m.out_channels for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_rounds_call_finetune_and_return_a_smaller_module_that_trains(tmp_path):
    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(1, 3, 32, 32)
    seen: list[list[int]] = []

    def finetune(m: nn.Module) -> None:
        assert m.training
        seen.append(_widths(m))
        opt = torch.optim.SGD(m.parameters(), lr=1e-3)
        loss = m(torch.randn(4, 3, 32, 32)).square().mean()
        loss.backward()
        opt.step()

    res = hwprune_fx.prune(net, budget="70%", example_inputs=(x,), finetune=finetune, rounds=2, repeat=5,
                           cache_dir=tmp_path / "cache")
    assert len(seen) == 2 and len(res.report["rounds"]) == 2
    assert seen[1] == _widths(res.model)
    assert sum(_widths(res.model)) < sum(_widths(net))          # channels went
    assert all(r["oracle"]["max_rel_error"] < 1e-3 for r in res.report["rounds"])
    # each round met its own (geometric) step of the budget, measured
    steps = [r["budget_ms"] for r in res.report["rounds"]]
    assert steps[0] > steps[1] == pytest.approx(res.report["budget_ms"], rel=1e-4)
    assert not res.model.training
    out = res.model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in res.model.parameters())


def test_without_finetune_one_round_equals_the_onnx_oracle(tmp_path):
    torch.manual_seed(1)
    net = Net().eval()
    res = hwprune_fx.prune(net, budget="80%", example_inputs=(torch.randn(1, 3, 32, 32),), repeat=5,
                           cache_dir=tmp_path / "cache")
    assert len(res.report["rounds"]) == 1 and not res.report["finetuned"]
    # the module is the pruned ONNX network rebuilt in torch: same numbers as the ONNX it came from
    from hwprune_fx.oracle import run_onnx
    from hwprune_fx.prune_module_budget import module_to_onnx

    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    ref = run_onnx(module_to_onnx(res.model, (torch.from_numpy(x),)), {"input": x})[0]
    np.testing.assert_allclose(res.model(torch.from_numpy(x)).detach().numpy(), ref, rtol=1e-4, atol=1e-5)


def test_finetune_needs_a_torch_module(tmp_path):
    with pytest.raises(UserError, match="finetune= applies to torch modules"):
        hwprune_fx.prune(str(tmp_path / "m.onnx"), budget="60%", finetune=lambda m: None)


def test_torch_target_times_onnx_through_onnx2torch(tmp_path):
    from hwprune_fx.prune_module_budget import module_to_onnx
    from hwprune_fx.targets import TimingConfig, create_backend

    proto = module_to_onnx(Net().eval(), (torch.randn(1, 3, 16, 16),))
    m = create_backend("torch", timing=TimingConfig(warmup=1, repeat=3, threads=1), use_cache=False).measure(proto)
    assert m.target == "torch" and m.repeats == 3 and m.median_ms > 0


def test_a_slow_first_baseline_reading_does_not_make_the_rounds_cut_nothing(tmp_path, monkeypatch):
    """A relative budget stays relative in every round: the rounds do not rest on the one
    baseline read before them (in one CI run that reading was slow enough that every round's ms
    budget looked met before anything was cut)."""
    import dataclasses

    import hwprune_fx.targets as targets

    real = targets.create_backend

    def slow_first_reading(*args, **kw):
        backend = real(*args, **kw)
        measure = backend.measure
        backend.measure = lambda model, *a, **k: dataclasses.replace(m := measure(model, *a, **k),
                                                                     median_ms=3 * m.median_ms)
        return backend
    monkeypatch.setattr(targets, "create_backend", slow_first_reading)
    torch.manual_seed(0)
    net = Net().eval()
    res = hwprune_fx.prune(net, budget="70%", example_inputs=(torch.randn(1, 3, 32, 32),), rounds=2, repeat=5,
                           cache_dir=tmp_path / "cache")
    assert sum(_widths(res.model)) < sum(_widths(net))
    last = res.report["rounds"][-1]
    assert last["reached"] and last["final"]["median_ms"] <= last["final_budget_ms"]


def test_round_progress_lines_speak_in_the_budgets_own_terms():
    """A relative budget's rounds are shown as shares, not as ms from a baseline the rounds no
    longer use; an absolute budget steps in ms."""
    from hwprune_fx.prune_module_budget import _round_line
    from hwprune_fx.search.budget import parse_budget

    rel = parse_budget("49%")
    first = _round_line(rel, 1, 2, 1.0, 999.0, 999.0)
    assert "70.0% of the original" in first and "70.0% of the network" in first and " ms" not in first
    # the first round reached 98% of the original: the second asks 49/98 of what it starts from
    second = _round_line(rel, 2, 2, 0.98, 999.0, 999.0)
    assert "49.0% of the original" in second and "50.0% of the network" in second
    absolute = parse_budget("12ms")
    assert _round_line(absolute, 1, 2, 1.0, 15.0, 12.0) == \
        "round 1/2: budget 15.000 ms (final 12.000 ms)"
