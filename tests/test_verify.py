"""``verify(graph)`` catches the inconsistencies a broken frontend or pass could produce."""
from __future__ import annotations

import pytest

from hwprune_fx.errors import VerificationError
from hwprune_fx.ir import ChannelGraph, Kind, OpNode, TensorInfo, verify


def _graph() -> ChannelGraph:
    g = ChannelGraph("t")
    for name in ("x", "y", "z"):
        g.add_tensor(TensorInfo(name, (1, 4, 2, 2)))
    g.inputs, g.outputs = ["x"], ["z"]
    g.add_op(OpNode("a", "Relu", Kind.UNARY, ["x"], ["y"]))
    g.add_op(OpNode("b", "Relu", Kind.UNARY, ["y"], ["z"]))
    return g.finish()


def test_valid_graph_passes() -> None:
    verify(_graph())


def test_unknown_tensor() -> None:
    g = _graph()
    g.add_op(OpNode("c", "Relu", Kind.UNARY, ["nope"], ["w"]))
    with pytest.raises(VerificationError, match="unknown tensor"):
        verify(g)


def test_two_producers() -> None:
    g = _graph()
    g.add_tensor(TensorInfo("q", (1,)))
    g.add_op(OpNode("c", "Relu", Kind.UNARY, ["x"], ["y"]))
    with pytest.raises(VerificationError, match="produced by both"):
        verify(g)


def test_cycle() -> None:
    g = _graph()
    g.nx.add_edge("b", "a", tensor="z")
    with pytest.raises(VerificationError, match="cycle"):
        verify(g)


def test_duplicate_operator_name() -> None:
    g = _graph()
    with pytest.raises(ValueError, match="duplicate"):
        g.add_op(OpNode("a", "Relu", Kind.UNARY, ["x"], ["y"]))
