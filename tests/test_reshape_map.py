"""Where a row-major re-view sends each channel: checked against numpy itself."""
from __future__ import annotations

import numpy as np
import pytest

from hwprune_fx.analysis.handlers import reshape_slot_map


def _numpy_truth(in_shape, axis, out_shape, out_axis):
    """Channel id of every input element, reshaped: the set of channels per output index."""
    ids = np.broadcast_to(np.arange(in_shape[axis]).reshape([-1 if i == axis else 1 for i in range(len(in_shape))]), in_shape)
    moved = np.moveaxis(ids.reshape(out_shape), out_axis, 0).reshape(out_shape[out_axis], -1)
    return [set(np.unique(row).tolist()) for row in moved]


@pytest.mark.parametrize("in_shape,axis,out_shape", [
    ((2, 8, 3, 3), 1, (2, 72)),            # flatten into a linear layer
    ((2, 8, 1, 1), 1, (2, 8)),             # squeeze after global pooling
    ((2, 8), 1, (2, 8, 1, 1)),             # unsqueeze
    ((2, 5, 12), 2, (2, 5, 3, 4)),         # heads x head_dim split
    ((2, 5, 3, 4), 3, (2, 5, 12)),         # merge heads back
    ((2, 4, 2, 3, 3), 1, (2, 8, 3, 3)),    # channel shuffle, second reshape
    ((2, 8, 3, 3), 1, (2, 2, 4, 3, 3)),    # channel shuffle, first reshape
    ((5, 2, 12), 2, (5, 6, 4)),            # split with the outer factor merged into batch
])
def test_mapping_matches_numpy(in_shape, axis, out_shape) -> None:
    res = reshape_slot_map(in_shape, axis, out_shape)
    assert res is not None
    out_axis, src, dst = res
    truth = _numpy_truth(in_shape, axis, out_shape, out_axis)
    got: list[set[int]] = [set() for _ in range(out_shape[out_axis])]
    for s, d in zip(src.tolist(), dst.tolist()):
        got[d].add(s)
    assert got == truth


def test_unsupported_reshape_is_refused() -> None:
    # channel split with trailing features mixed in: no single output axis holds the channel
    assert reshape_slot_map((2, 6, 4), 1, (2, 4, 6)) is None
