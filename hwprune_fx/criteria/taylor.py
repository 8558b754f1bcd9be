"""First-order Taylor importance (Molchanov et al., CVPR 2019), per removable unit.

    importance(u) = mean over calibration samples of (d loss / d m_u)^2

where ``m_u`` scales unit ``u``'s channels where the operators that mix them read them (its
frontier edges, see :mod:`~hwprune_fx.criteria.masked_model`; its gradient is the sum of
activation x gradient over all positions and all those edges). No labels are needed: for a
classifier the loss is the cross-entropy against the model's own argmax prediction; for any
other output it is ``0.5 * ||y||^2`` (the squared output), a stand-in that weighs a channel by
how much it moves the output.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from hwprune_fx.criteria.base import register_criterion
from hwprune_fx.criteria.data_driven import DataCriterion, mask_gradients, prediction

if TYPE_CHECKING:
    import torch

    from hwprune_fx.criteria.masked_model import MaskedModel

__all__ = ["TaylorCriterion"]


@register_criterion("taylor")
class TaylorCriterion(DataCriterion):
    name = "taylor"

    def batch_scores(self, model: MaskedModel, inputs: list[torch.Tensor], batch_index: int,
                     masks: list[torch.Tensor]) -> torch.Tensor:
        import torch

        kind, y = prediction(model(inputs, masks))
        if kind == "categorical":
            loss = torch.nn.functional.cross_entropy(y, y.argmax(1).detach(), reduction="sum")
        else:
            loss = 0.5 * (y ** 2).sum()
        return mask_gradients(loss, masks, model, retain_graph=False) ** 2
