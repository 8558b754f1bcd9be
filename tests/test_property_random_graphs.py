"""Property: on random networks, random ratios and random channel choices, the oracle holds."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwprune_fx.analysis import analyze_dependencies
from hwprune_fx.emit.onnx_emit import export_checked
from hwprune_fx.oracle import onnx_oracle, random_inputs
from hwprune_fx.passes import PruneChannelsPass
from hwprune_fx.pipeline import load_onnx_model
from hwprune_fx.plan import plan_by_ratio
from tests.random_models import BLOCK_KINDS, build_random_net

HW = 6
nets = st.tuples(
    st.lists(st.tuples(st.sampled_from(BLOCK_KINDS), st.integers(1, 6)), min_size=1, max_size=6),
    st.sampled_from(["flatten", "pool"]),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(net=nets, ratio=st.floats(0.05, 0.95), seed=st.integers(0, 2**31 - 1))
def test_onnx_oracle_holds_on_random_networks(tmp_path, net, ratio, seed) -> None:
    choices, head = net
    model = build_random_net(choices, head, HW)
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (torch.randn(1, 3, HW, HW),), str(path), dynamo=False, opset_version=18)
    loaded = load_onnx_model(path)
    analysis = analyze_dependencies(loaded.channel_graph)
    scores = np.random.default_rng(seed).random(analysis.num_units)
    plan = plan_by_ratio(analysis, scores, ratio)
    assert PruneChannelsPass(plan)(loaded.graph).modified == (not plan.is_empty)
    pruned = export_checked(loaded.graph, plan)
    result = onnx_oracle(loaded.original, pruned, plan.removed_channels, random_inputs(loaded.original, seed=seed % 1000))
    assert result.exact, (choices, head, ratio, result)
    # every prunable group actually shrank when the ratio asks for at least one channel
    for grp in analysis.prunable_groups():
        if int(np.floor(ratio * grp.size)) >= 1:
            assert any(t in plan.removed_channels for t in grp.tensors)
