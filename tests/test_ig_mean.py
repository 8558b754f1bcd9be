"""``ig-mean``: information gain of removing a channel that is replaced by its calibration mean.

The masked network's means are checked against a hand-written forward pass that does the
replacement, and the Fisher estimate against the exact KL of that replacement.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from scipy.stats import spearmanr

from hwprune_fx.analysis import analyze_dependencies
from hwprune_fx.criteria import create_criterion, needs_data
from hwprune_fx.criteria.information_gain import exact_information_gain
from hwprune_fx.criteria.masked_model import build_masked_model
from hwprune_fx.oracle import onnx_oracle, random_inputs
from hwprune_fx.pipeline import load_onnx_model
from hwprune_fx.zoo import export_onnx
from tests.test_cli import _assert_clean_failure, run_cli
from tests.test_data_criteria import SmallNet, calibration, small_net

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# where each SmallNet stage's channels leave their unit: c1 and c2 at the next conv's input,
# c3 at the linear head (the spatial mean carries them on)
STAGES = {1: "/c1/Conv_output_0", 2: "/c2/Conv_output_0", 3: "/c3/Conv_output_0"}


@torch.no_grad()
def forward_replacing(net: SmallNet, x: torch.Tensor, stage: int = 0, channel: int = 0,
                      value: float | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """SmallNet's logits with one stage's channel set to ``value`` where the next layer reads it,
    and every stage's activations as read there (``value`` None: the original network)."""
    seen = []

    def read(h: torch.Tensor, at: int) -> torch.Tensor:
        seen.append(h.clone())
        if at == stage and value is not None:
            h = h.clone()
            h[:, channel] = value
        return h

    h = read(torch.relu(net.b1(net.c1(x))), 1)
    h = read(torch.relu(net.b2(net.c2(h))), 2)
    f = read(torch.relu(net.b3(net.c3(h))).mean((2, 3)), 3)
    return net.head(f), seen


def _onnx(net: SmallNet, tmp_path: Path):
    path = tmp_path / "net.onnx"
    export_onnx(net, (1, 3, 16, 16), path)
    loaded = load_onnx_model(str(path))
    return loaded, analyze_dependencies(loaded.channel_graph)


def test_a_mask_at_zero_replaces_the_channel_by_its_calibration_mean(tmp_path: Path) -> None:
    net = small_net()
    loaded, analysis = _onnx(net, tmp_path)
    calib = calibration(8, (3, 16, 16))
    masked = build_masked_model(loaded.original, analysis)
    masked.means = masked.activation_means(calib)
    # the calibration mean of every stage's channels, from the hand-written pass
    per_stage = [forward_replacing(net, torch.from_numpy(calib.samples["input"][i:i + 1]))[1] for i in range(8)]
    means = {s: torch.stack([acts[s - 1].double().mean(dim=[d for d in range(acts[s - 1].dim()) if d != 1])
                             for acts in per_stage]).mean(0) for s in STAGES}
    x = torch.randn(1, 3, 16, 16)
    for stage, tensor in STAGES.items():
        units = analysis.units_of(tensor)
        # the channels with the largest means, where replacing and zeroing differ most
        for channel in torch.argsort(-means[stage].abs())[:3].tolist():
            ref, _ = forward_replacing(net, x, stage, channel, float(means[stage][channel]))
            with torch.no_grad():
                got = masked([x], masked.without_unit(int(units[channel])))[0]
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
            zeroed, _ = forward_replacing(net, x, stage, channel, 0.0)
            assert (got - zeroed).abs().max() > 10 * (got - ref).abs().max()


def test_means_at_zero_are_the_plain_masks(tmp_path: Path) -> None:
    """Without means the masked network is the one ``ig`` and ``taylor`` use: removal zeroes."""
    net = small_net()
    loaded, analysis = _onnx(net, tmp_path)
    masked = build_masked_model(loaded.original, analysis)
    x = torch.randn(1, 3, 16, 16)
    unit = int(analysis.units_of(STAGES[2])[3])
    with torch.no_grad():
        got = masked([x], masked.without_unit(unit))[0]
    torch.testing.assert_close(got, forward_replacing(net, x, 2, 3, 0.0)[0], rtol=1e-4, atol=1e-4)


def test_a_constant_channel_costs_nothing_to_ig_mean_and_much_to_ig(tmp_path: Path) -> None:
    """A channel that is the same everywhere carries no information; only its mean is lost when it
    is zeroed, and a recalibration restores that: ``ig`` scores it high, ``ig-mean`` zero."""
    loaded, analysis = _onnx(_constant_channel_net(), tmp_path)
    calib = calibration(8, (3, 16, 16))
    units = analysis.units_of(STAGES[1])
    ig = create_criterion("ig", model=loaded.original, calib=calib).score(analysis)[units]
    ig_mean = create_criterion("ig-mean", model=loaded.original, calib=calib).score(analysis)[units]
    assert ig[0] > np.median(ig)
    assert ig_mean[0] <= 1e-9 * ig_mean.max()
    assert np.all(ig_mean[1:] > 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_fisher_ig_mean_ranks_units_like_the_exact_kl_of_mean_replacement(tmp_path: Path, seed: int) -> None:
    loaded, analysis = _onnx(small_net(seed), tmp_path)
    calib = calibration(24, (3, 16, 16), seed)
    units = np.flatnonzero(~analysis.unit_pinned)
    exact = exact_information_gain(loaded.original, analysis, calib, units, centered=True)
    plain = exact_information_gain(loaded.original, analysis, calib, units)
    fisher = create_criterion("ig-mean", model=loaded.original, calib=calib).score(analysis)[units]
    # measured: 0.993-0.998 (seeds 0-1)
    assert spearmanr(exact, fisher)[0] >= 0.97
    # a different question than ig's: zeroing ranks the units otherwise (measured 0.76-0.77), and
    # costs far more than mean replacement (median KL ratio measured 0.036-0.045)
    assert spearmanr(exact, plain)[0] <= 0.9
    alive = plain > 1e-12
    assert np.median(exact[alive] / plain[alive]) <= 0.2
    exact_option = create_criterion("ig-mean", model=loaded.original, calib=calib, exact=True).score(analysis)
    np.testing.assert_allclose(exact_option[units], exact, rtol=1e-9)


def _constant_channel_net() -> SmallNet:
    """SmallNet whose first conv's channel 0 is 2.0 everywhere after its BN and ReLU."""
    net = small_net()
    with torch.no_grad():
        net.c1.weight[0] = 0.0
        net.c1.bias[0] = 0.0
        net.b1.running_mean[0], net.b1.running_var[0], net.b1.bias[0] = 0.0, 1.0, 2.0
    return net


@pytest.mark.parametrize("criterion, removed", [("ig", False), ("ig-mean", True)])
def test_cli_ig_mean_prunes_the_constant_channel_and_ig_keeps_it(tmp_path: Path, criterion: str,
                                                                 removed: bool) -> None:
    path, calib = tmp_path / "net.onnx", tmp_path / "x.npy"
    export_onnx(_constant_channel_net(), (1, 3, 16, 16), path)
    np.save(calib, np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32))
    out, rep = tmp_path / "p.onnx", tmp_path / "r.json"
    res = run_cli("prune", str(path), "--ratio", "0.5", "--criterion", criterion, "--calib", str(calib),
                  "-o", str(out), "--report", str(rep), "-q")
    assert res.returncode == 0, res.stderr
    report = json.loads(rep.read_text())
    assert report["criterion"] == criterion
    assert (0 in report["removed_channels"][STAGES[1]]["indices"]) is removed
    original, pruned = onnx.load(str(path)), onnx.load(str(out))
    assert onnx_oracle(original, pruned, report["removed_channels"], random_inputs(original, seed=3)).exact


def test_ig_mean_needs_calibration_data(tmp_path: Path) -> None:
    assert needs_data("ig-mean")
    path = tmp_path / "net.onnx"
    export_onnx(small_net(), (1, 3, 16, 16), path)
    res = run_cli("prune", str(path), "--ratio", "0.3", "--criterion", "ig-mean", "-o", str(tmp_path / "p.onnx"))
    _assert_clean_failure(res, "criterion 'ig-mean' needs calibration data")
    assert not (tmp_path / "p.onnx").exists()
