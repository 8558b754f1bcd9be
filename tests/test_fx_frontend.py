"""The torch.fx path: trace -> ChannelGraph -> plan -> GraphModule rewrite, exact by the fx oracle."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from hwprune_fx.analysis import analyze_dependencies
from hwprune_fx.errors import UserError
from hwprune_fx.frontends.fx_frontend import fx_oracle, trace_module
from hwprune_fx.ir import Kind
from hwprune_fx.passes import PruneChannelsPass
from hwprune_fx.pipeline import analyze, prune_module
from hwprune_fx.plan import plan_by_ratio
from tests.helpers import randomize_bn, randomize_layer_scale
from tests.random_models import BLOCK_KINDS, build_random_net

# densenet121 is fast enough at 64x64 (about 2 s), so it stays in
MODELS = ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "efficientnet_b0", "densenet121", "convnext_tiny"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _torchvision(name: str, seed: int = 0) -> nn.Module:
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.get_model(name, weights=None)
    return randomize_layer_scale(randomize_bn(model, seed), seed).eval()


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _inputs(seed: int, shape: tuple[int, ...] = (1, 3, 64, 64)) -> tuple[torch.Tensor]:
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)),)


@pytest.mark.parametrize("name", MODELS)
def test_prune_module_is_exact_on_torchvision(name: str) -> None:
    model = _torchvision(name)
    x = _inputs(0)
    before = model(*x).detach().clone()
    res = prune_module(model, x, ratio=0.3)
    traced = trace_module(model, x)
    original = traced.module
    assert [op.reason for op in traced.channel_graph.ops() if op.kind is Kind.BARRIER] == []
    assert torch.equal(model(*x), before), "the user's module must not be modified"
    assert res.plan.removed_units.size > 0
    assert _n_params(res.model) < _n_params(model)
    # exact on the example input and on a fresh one
    assert res.report["oracle"]["max_rel_error"] < 1e-3
    assert fx_oracle(original, res.model, res.plan.removed_channels, _inputs(1)) < 1e-3
    # the check can fail: without the masks the original computes something else
    assert fx_oracle(original, res.model, {}, _inputs(1)) > 1e-3


@pytest.mark.parametrize("name", ["resnet18", "shufflenet_v2_x0_5"])
def test_fx_and_onnx_analyses_agree(tmp_path, name: str) -> None:
    model = _torchvision(name)
    x = _inputs(0)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(model, x, str(path), dynamo=False)
    by_fx = analyze(model, example_inputs=x).prunable_groups()
    by_onnx = analyze(path).prunable_groups()
    assert len(by_fx) == len(by_onnx) > 0
    assert sum(g.size for g in by_fx) == sum(g.size for g in by_onnx)
    assert sorted(g.size for g in by_fx) == sorted(g.size for g in by_onnx)


def test_pruned_module_trains() -> None:
    res = prune_module(_torchvision("resnet18"), _inputs(0), ratio=0.3)
    gm = res.model.train()
    params = list(gm.parameters())
    assert all(isinstance(p, nn.Parameter) and p.requires_grad and p.is_leaf for p in params)
    before = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=0.1)
    loss = F.cross_entropy(gm(_inputs(2, (2, 3, 64, 64))[0]), torch.tensor([1, 3]))
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    assert all(not torch.equal(a, p.detach()) for a, p in zip(before, params))
    assert torch.isfinite(F.cross_entropy(gm(_inputs(3, (2, 3, 64, 64))[0]), torch.tensor([0, 2])))


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        return y if y.sum() > 0 else -y


def test_untraceable_module_is_a_user_error() -> None:
    with pytest.raises(UserError, match="DataDependent") as exc:
        prune_module(DataDependent(), _inputs(0, (1, 3, 8, 8)), ratio=0.3)
    assert "\n" not in str(exc.value)


class Mixed(nn.Module):
    """Every rewrite at once: per-channel get_attr, PReLU, grouped/depthwise/transposed convs,
    split with sizes, a channel slice, a literal-int channel shuffle, BatchNorm1d after flatten,
    an unknown operator (cumsum) and a module called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.act = nn.PReLU(16)
        self.scale = nn.Parameter(torch.rand(16, 1, 1) + 0.5)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.up = nn.ConvTranspose2d(16, 12, 2, stride=2, groups=2)
        self.branch = nn.Conv2d(8, 8, 1)
        self.twice = nn.Conv2d(16, 16, 1)
        self.mix = nn.Conv2d(16, 8, 1)
        self.odd = nn.Conv2d(8, 8, 1)
        self.bn1d = nn.BatchNorm1d(64)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        y = self.act(self.bn(self.stem(x))) * self.scale
        y = self.up(self.dw(self.grouped(y)))
        a, b = torch.split(y, [4, 8], dim=1)
        b = self.branch(b)
        y = torch.cat([a, b[:, 2:6], b], 1)
        y = y.view(1, 2, 8, 16, 16).transpose(1, 2).reshape(1, 16, 16, 16)
        y = self.twice(torch.relu(self.twice(y)))
        y = self.mix(y)
        y = torch.cat([y, torch.cumsum(self.odd(y), 1)], 1)
        y = torch.flatten(F.adaptive_avg_pool2d(y, 2), 1)
        return self.fc(self.bn1d(y))


@pytest.mark.parametrize("seed", range(4))
def test_every_rewrite_on_a_mixed_module(seed: int) -> None:
    model = randomize_bn(Mixed(), seed)
    x = _inputs(seed, (1, 3, 8, 8))
    traced = trace_module(model, x)
    barriers = [op for op in traced.channel_graph.ops() if op.kind is Kind.BARRIER]
    assert [op.op_type for op in barriers] == ["cumsum"] and "not understood" in barriers[0].reason
    analysis = analyze_dependencies(traced.channel_graph)
    scores = np.random.default_rng(seed).random(analysis.num_units)
    plan = plan_by_ratio(analysis, scores, 0.5)
    original = traced.copy_module()
    assert PruneChannelsPass(plan)(traced.module).modified
    pruned = traced.module
    assert fx_oracle(original, pruned, plan.removed_channels, x) < 1e-3
    assert fx_oracle(original, pruned, plan.removed_channels, _inputs(seed + 10, (1, 3, 8, 8))) < 1e-3
    assert fx_oracle(original, pruned, {}, x) > 1e-3
    assert pruned.scale.shape[0] < 16 and isinstance(pruned.scale, nn.Parameter)
    assert pruned.bn1d.num_features < 64 and pruned.fc.in_features == pruned.bn1d.num_features
    assert pruned.dw.groups == pruned.dw.in_channels < 16
    assert "reshape(1, 16," not in pruned.code and _n_params(pruned) < _n_params(original)
    # cumsum pins its input and output: self.odd keeps every output channel
    assert pruned.odd.out_channels == 8


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=st.tuples(st.lists(st.tuples(st.sampled_from(BLOCK_KINDS), st.integers(1, 6)), min_size=1, max_size=5),
                     st.sampled_from(["flatten", "pool"])),
       ratio=st.floats(0.05, 0.95), seed=st.integers(0, 2**31 - 1))
def test_fx_oracle_holds_on_random_networks(net, ratio: float, seed: int) -> None:
    choices, head = net
    model = build_random_net(choices, head, 6)
    x = _inputs(seed % 1000, (1, 3, 6, 6))
    traced = trace_module(model, x)
    analysis = analyze_dependencies(traced.channel_graph)
    plan = plan_by_ratio(analysis, np.random.default_rng(seed).random(analysis.num_units), ratio)
    original = traced.copy_module()
    assert PruneChannelsPass(plan)(traced.module).modified == (not plan.is_empty)
    assert fx_oracle(original, traced.module, plan.removed_channels, x) < 1e-3, (choices, head, ratio)
