"""What the data-driven criteria share: construction checks, the batch loop, the model's output model.

The output is read as a distribution over what the network predicts:

- one output of shape ``[batch, classes]``: logits of a categorical distribution (a classifier);
- anything else: the mean of a unit-variance Gaussian over every output element, so that
  KL divergences become ``0.5 * ||y - y'||^2`` (regression, detection heads, features).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from hwprune_fx.analysis import DependencyAnalysis
from hwprune_fx.calib import CalibrationData
from hwprune_fx.criteria.base import require_data
from hwprune_fx.errors import UserError

if TYPE_CHECKING:  # torch loads when a criterion scores, not when the registry is imported
    import torch

    from hwprune_fx.criteria.masked_model import MaskedModel

__all__ = ["DataCriterion", "prediction", "divergence", "mask_gradients"]


def prediction(outputs: list[torch.Tensor]) -> tuple[str, torch.Tensor]:
    """``("categorical", logits [B, C])`` for a classifier, else ``("gaussian", outputs flattened [B, D])``."""
    import torch

    if len(outputs) == 1 and outputs[0].dim() == 2 and outputs[0].shape[1] > 1:
        return "categorical", outputs[0]
    batch = outputs[0].shape[0] if outputs and outputs[0].dim() else 1
    return "gaussian", torch.cat([o.reshape(batch, -1) if o.dim() else o.reshape(1, 1).expand(batch, 1)
                                  for o in outputs], 1)


def divergence(kind: str, ref: torch.Tensor, got: torch.Tensor) -> float:
    """KL(p_ref || p_got), summed over the batch rows."""
    import torch

    if kind == "categorical":
        lp, lq = torch.log_softmax(ref.double(), 1), torch.log_softmax(got.double(), 1)
        return float((lp.exp() * (lp - lq)).sum())
    return float(0.5 * ((ref.double() - got.double()) ** 2).sum())


def mask_gradients(objective: torch.Tensor, masks: list[torch.Tensor], model: MaskedModel,
                   retain_graph: bool) -> torch.Tensor:
    """d objective / d m_unit for every unit (masks not on any path to the output give 0)."""
    import torch

    grads = torch.autograd.grad(objective, masks, retain_graph=retain_graph, allow_unused=True)
    return model.unit_sums([torch.zeros_like(m) if g is None else g for g, m in zip(grads, masks)])


class DataCriterion:
    """Base of ``taylor`` and ``ig``: runs the calibration data through the masked network.

    Args:
        model: the prepared ONNX original (``LoadedOnnx.original``) or the traced GraphModule whose
            analysis will be scored.
        calib: calibration inputs, keyed by the model's input names.
        progress: called with one line per few batches.
    """

    name = ""
    needs_data = True
    global_scale = True   # a change of the loss (taylor) or of the output distribution (ig)
    centered = False      # score removal as "replaced by its calibration mean" (see masked_model)
    #: whether a budgeted search re-scores by default as it cuts (``prune_to_budget(rescore=None)``)
    rescore_default = False

    def __init__(self, model: Any = None, calib: CalibrationData | None = None, *,
                 progress: Callable[[str], None] | None = None) -> None:
        require_data(self.name, calib)
        if model is None:
            raise UserError(f"criterion {self.name!r} needs the model it scores (model=...)")
        if not isinstance(calib, CalibrationData):
            raise UserError(f"criterion {self.name!r}: calib must be CalibrationData (see hwprune_fx.calib), "
                            f"got {type(calib).__name__}")
        self.model = model
        self.calib = calib
        self.progress = progress or (lambda msg: None)

    def score(self, analysis: DependencyAnalysis, keep: np.ndarray | None = None) -> np.ndarray:
        """Every unit's importance in the network where ``keep`` (one bool per unit; default all
        True) says which units are still there: a search that re-scores as it cuts asks what
        removing a unit costs the network it has now, not the original."""
        import torch

        masked = self._masked_model(analysis)
        total = torch.zeros(analysis.num_units, dtype=torch.float64)
        n_batches = masked.num_batches(self.calib)
        every = max(1, n_batches // 8)
        for i, inputs in enumerate(masked.batches(self.calib), start=1):
            total += self.batch_scores(masked, inputs, i, masked.at(keep, requires_grad=True))
            if i % every == 0 or i == n_batches:
                self.progress(f"{self.name}: batch {i}/{n_batches} ({masked.batch_size} sample(s) each)")
        out = (total / (n_batches * masked.batch_size)).numpy()
        if keep is not None:
            out[~np.asarray(keep, dtype=bool)] = 0.0   # already gone: nothing left to lose
        return out

    def _masked_model(self, analysis: DependencyAnalysis) -> MaskedModel:
        """Built once per analysis: a search that re-scores reuses it."""
        from hwprune_fx.criteria.masked_model import build_masked_model

        cached = getattr(self, "_masked", None)
        if cached is None or cached[0] is not analysis:
            self._masked = (analysis, build_masked_model(self.model, analysis, self.calib if self.centered else None))
        return self._masked[1]

    def batch_scores(self, model: MaskedModel, inputs: list[torch.Tensor], batch_index: int,
                     masks: list[torch.Tensor]) -> torch.Tensor:
        """Summed importance contributions of one batch, one per unit; the gradients are taken at
        ``masks`` (leaf tensors: the network being scored, see :meth:`score`)."""
        raise NotImplementedError
