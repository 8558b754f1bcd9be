"""Information gain (HFP): how much the output distribution changes when a unit is removed.

    IG(u) = E_x KL( p(.|x) || p_without_u(.|x) )

Removing ``u`` sets its masks ``m_u`` (one per frontier edge: where an operator that mixes
channels, or the graph output, reads the unit) from 1 to 0. To second order around ``m = 1``
the KL is the Fisher quadratic form, and along the single direction ``m_u`` that is

    IG(u) ~= 0.5 * E_x E_{y ~ p(.|x)} (d log p(y|x) / d m_u)^2

estimated with ``y`` drawn from the model's own prediction (``samples`` draws per input, fixed
seed), or summed exactly over the classes when a batch holds one sample and there are at most
``enumerate_up_to`` classes. One forward pass and ``samples`` backward passes per batch score
every unit at once. For a non-classifier output (a unit-variance Gaussian around it, see
:mod:`~hwprune_fx.criteria.data_driven`) ``y - f(x)`` is standard normal, so the draws are
Gaussian directions ``v`` and the objective is ``v . y``.

:func:`exact_information_gain` computes the KL itself, one forward pass per unit and batch:
the reference for tests, and ``ig`` with ``exact=True`` for small models.

``ig-mean`` is the same estimate for a removal that replaces each channel by its calibration
mean where the consumers read it (``m_u`` scales ``x - mean`` instead of ``x``): what is left
once BatchNorm statistics are re-estimated or a short fine-tune has run, both of which restore a
layer's mean. ``ig`` weighs a channel with a large mean as if that mean were lost for good;
``ig-mean`` weighs only what varies from sample to sample. The emitted network is the same
oracle-exact pruned network whichever is used; only the choice of channels differs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from hwprune_fx.analysis import DependencyAnalysis
from hwprune_fx.calib import CalibrationData
from hwprune_fx.criteria.base import register_criterion
from hwprune_fx.criteria.data_driven import DataCriterion, divergence, mask_gradients, prediction

if TYPE_CHECKING:
    import torch

    from hwprune_fx.criteria.masked_model import MaskedModel

__all__ = ["InformationGainCriterion", "exact_information_gain"]


@register_criterion("ig")
class InformationGainCriterion(DataCriterion):
    """``samples``: draws of ``y`` per input; ``exact``: compute every KL (one pass per unit)."""

    name = "ig"

    def __init__(self, model: Any = None, calib: CalibrationData | None = None, *, samples: int = 4,
                 enumerate_up_to: int = 16, exact: bool = False, seed: int = 0,
                 progress: Callable[[str], None] | None = None) -> None:
        super().__init__(model, calib, progress=progress)
        self.samples = max(1, int(samples))
        self.enumerate_up_to = enumerate_up_to
        self.exact = exact
        self.seed = seed

    def score(self, analysis: DependencyAnalysis, keep: np.ndarray | None = None) -> np.ndarray:
        if not self.exact:
            return super().score(analysis, keep)
        units = np.flatnonzero(~analysis.unit_pinned if keep is None else ~analysis.unit_pinned & keep)
        out = np.zeros(analysis.num_units)  # pinned or gone: no plan may remove them, not computed
        out[units] = exact_information_gain(self.model, analysis, self.calib, units, centered=self.centered,
                                            keep=keep, progress=self.progress)
        return out

    def batch_scores(self, model: MaskedModel, inputs: list[torch.Tensor], batch_index: int,
                     masks: list[torch.Tensor]) -> torch.Tensor:
        import torch

        kind, y = prediction(model(inputs, masks))
        logp = torch.log_softmax(y, 1) if kind == "categorical" else y
        batch, width = y.shape
        if batch == 1 and width <= self.enumerate_up_to:
            weights = logp.exp()[0].detach() if kind == "categorical" else torch.ones(width)
            objectives = [logp[0, c] for c in range(width)]
        else:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + batch_index)
            if kind == "categorical":
                draws = torch.multinomial(logp.exp().detach().double(), self.samples, replacement=True,
                                          generator=gen)
                objectives = [logp.gather(1, draws[:, k:k + 1]).sum() for k in range(self.samples)]
            else:
                directions = torch.randn((self.samples, batch, width), generator=gen)
                objectives = [(directions[k] * y).sum() for k in range(self.samples)]
            weights = torch.full((self.samples,), 1.0 / self.samples)
        out = torch.zeros(model.num_units, dtype=torch.float64)
        last = len(objectives) - 1
        for k, (w, obj) in enumerate(zip(weights.tolist(), objectives)):
            if w > 0:
                out += w * mask_gradients(obj, masks, model, retain_graph=k < last) ** 2
        return 0.5 * out


@register_criterion("ig-mean")
class MeanInformationGainCriterion(InformationGainCriterion):
    """Information gain of removing a unit whose mean a recalibration restores (see the module doc)."""

    name = "ig-mean"
    centered = True
    #: re-scored as the search cuts: its partly cut network (means kept) is close to the one a
    #: recalibration gives, so its scores there mean something (benchmarks/results/quality_rescore.md)
    rescore_default = True


def exact_information_gain(model: Any, analysis: DependencyAnalysis, calib: CalibrationData,
                           units: np.ndarray | list[int] | None = None, *, centered: bool = False,
                           keep: np.ndarray | None = None, progress: Callable[[str], None] | None = None) -> np.ndarray:
    """Mean KL(p_original || p_without_unit) over ``calib``, for each unit of ``units`` (default: all).

    Each unit is removed alone, by zeroing its masks (on all of its frontier edges): exactly the
    network the oracle checks a pruned model against, the original with the unit's slots zeroed.
    ``centered``: its channels are replaced by their calibration means instead (``ig-mean``).
    ``keep``: the network the unit is removed from (one bool per unit; default the original),
    so the KL is between that network and the same without the unit.
    """
    import torch

    from hwprune_fx.criteria.masked_model import build_masked_model

    say = progress or (lambda msg: None)
    masked = build_masked_model(model, analysis, calib if centered else None)
    units = np.arange(analysis.num_units) if units is None else np.asarray(units, np.int64)
    batches = list(masked.batches(calib))
    out = np.zeros(units.size)
    with torch.no_grad():
        start = np.ones(analysis.num_units, bool) if keep is None else np.asarray(keep, bool)
        base = masked.at(start)
        refs = [prediction(masked(x, base)) for x in batches]
        for j, u in enumerate(units.tolist()):
            without = start.copy()
            without[u] = False
            masks = masked.at(without)
            out[j] = sum(divergence(kind, ref, prediction(masked(x, masks))[1])
                         for x, (kind, ref) in zip(batches, refs))
            if (j + 1) % max(1, units.size // 8) == 0:
                say(f"ig (exact): unit {j + 1}/{units.size}")
    return out / (len(batches) * masked.batch_size)
