"""``similarity``: AFCP's zero-out-or-merge choice, scored by the energy each removal loses.

For the merge site ``T`` of a mergeable group (see :mod:`hwprune_fx.analysis.mergeable`), the
activations ``a_c`` of ``T`` on the calibration data give, for every channel ``c`` and candidate
twin ``k`` of the same group, the least-squares scale and residual over all samples and positions

    alpha = <a_c, a_k> / <a_k, a_k>,      r_c = ||a_c - alpha a_k||^2 = ||a_c||^2 - <a_c, a_k>^2 / ||a_k||^2

(one Gram matrix per site). What the consumers lose when ``c`` goes is ``W[:, c] (a_c - alpha a_k)``
after a merge and ``W[:, c] a_c`` after a zero-out; the score is that energy,

    score_c = ||W[:, c]||^2 * (r_c if c merges else ||a_c||^2)      (energies per position)

with ``||W[:, c]||^2`` summed over the consumers of ``T``. ``c`` merges when its relative residual
``r_c / ||a_c||^2`` is at most ``max_residual``; otherwise its score is the zero-out energy, which is
also what units outside mergeable groups get (summed over the tensors through which their
channels leave the group, weighted by the column norms of linear readers, 1 for other readers).

Twins are chosen greedily, cheapest merge first: a channel another one merges into stays a plain
channel (it is the anchor; merging it too would lose both), and a merged channel is no twin.
So of two exact copies exactly one scores ~0. Exact ties (relative residual below 1e-6) merge
the channel with the larger energy first, so a planted ``c = 2 k`` merges with ``alpha = 2``.
After :meth:`SimilarityCriterion.score`, ``twins`` maps every merging unit to its
:class:`~hwprune_fx.analysis.mergeable.Merge`; which of them apply depends on the final plan
(``hwprune_fx.passes.merge_similar.applicable_merges``).
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import onnx

from hwprune_fx.analysis import DependencyAnalysis
from hwprune_fx.analysis.mergeable import Merge, MergeSite, find_merge_sites, linear_consumer_reason, stays_inside
from hwprune_fx.calib import CalibrationData, model_input_specs
from hwprune_fx.criteria.base import register_criterion
from hwprune_fx.errors import UserError

__all__ = ["SimilarityCriterion", "tensor_statistics"]

_EXACT = 1e-6


@register_criterion("similarity")
class SimilarityCriterion:
    """Energy lost by removing each unit, merged into a similar kept unit where that is cheaper.

    Args:
        model: the prepared ONNX original (``LoadedOnnx.original``) whose analysis is scored.
        calib: calibration inputs, keyed by the model's input names.
        max_residual: relative residual ``r_c / ||a_c||^2`` up to which a channel merges.
        progress: called with one line per few batches.
    """

    name = "similarity"
    needs_data = True

    def __init__(self, model: onnx.ModelProto | None = None, calib: CalibrationData | None = None, *,
                 max_residual: float = 0.05, progress: Callable[[str], None] | None = None) -> None:
        if calib is None:  # the message of criteria.base.require_data, for callers that skip it
            raise UserError(f"criterion {self.name!r} needs calibration data: pass --calib FILE "
                            f"(.npz/.npy or a folder of images)")
        if not isinstance(model, onnx.ModelProto):
            raise UserError(f"criterion {self.name!r} needs the ONNX model it scores (model=onnx.ModelProto)")
        if not isinstance(calib, CalibrationData):
            raise UserError(f"criterion {self.name!r}: calib must be CalibrationData (see hwprune_fx.calib), "
                            f"got {type(calib).__name__}")
        if not 0.0 <= max_residual < 1.0:
            raise UserError(f"similarity: max_residual must be in [0, 1), got {max_residual}")
        self.model = model
        self.calib = calib
        self.max_residual = float(max_residual)
        self.progress = progress or (lambda msg: None)
        self.twins: dict[int, Merge] = {}
        self.not_mergeable: dict[int, str] = {}

    def score(self, analysis: DependencyAnalysis) -> np.ndarray:
        sites, self.not_mergeable = find_merge_sites(analysis)
        leaving = {grp.id: _leaving_tensors(analysis, grp.tensors)
                   for grp in analysis.prunable_groups() if grp.id not in sites}
        gram_of = sorted({s.tensor for s in sites.values()})
        energy_of = sorted({t for tensors in leaving.values() for t in tensors} - set(gram_of))
        grams, energies = tensor_statistics(self.model, self.calib, gram_of, energy_of, analysis,
                                            self.progress)
        scores = np.zeros(analysis.num_units, dtype=np.float64)
        self.twins = {}
        for site in sites.values():
            self._score_site(site, grams[site.tensor], scores)
        for gid, tensors in leaving.items():
            grp = analysis.groups[gid]
            for t, weights in tensors.items():
                e = energies[t] if t in energies else np.diag(grams[t]).copy()
                units = analysis.units_of(t)
                sel = np.isin(units, grp.units)
                np.add.at(scores, units[sel], (e * weights)[sel])
        return scores

    def _score_site(self, site: MergeSite, gram: np.ndarray, scores: np.ndarray) -> None:
        ch = site.channels
        g = gram[np.ix_(ch, ch)]
        e = np.clip(np.diag(g).copy(), 0.0, None)
        wn = site.column_norms()
        with np.errstate(divide="ignore", invalid="ignore"):
            resid = np.clip(e[:, None] - g ** 2 / e[None, :], 0.0, None)
        resid[:, e <= 0] = np.inf           # a dead channel is nobody's twin
        np.fill_diagonal(resid, np.inf)
        n = ch.size
        cost = np.where(e > 0, e, 0.0)      # zero-out energy unless merged below
        best = resid.min(1) if n > 1 else np.full(n, np.inf)
        rel = np.where(e > 0, best / np.where(e > 0, e, 1.0), np.inf)
        key = np.where(rel < _EXACT, 0.0, wn * best)
        merged = np.zeros(n, dtype=bool)
        anchor = np.zeros(n, dtype=bool)
        for c in np.lexsort((-e, key)).tolist():
            if anchor[c] or e[c] <= 0 or not np.isfinite(key[c]):
                continue
            row = np.where(merged, np.inf, resid[c])
            k = int(np.argmin(row))
            if not np.isfinite(row[k]) or row[k] > self.max_residual * e[c]:
                continue
            merged[c], anchor[k] = True, True
            cost[c] = row[k]
            u, v = int(site.group.units[c]), int(site.group.units[k])
            self.twins[u] = Merge(u, v, float(g[c, k] / g[k, k]), site.tensor, int(ch[c]), int(ch[k]))
        scores[site.group.units] += wn * cost


def _leaving_tensors(analysis: DependencyAnalysis, tensors: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Tensors through which a (non-mergeable) group's channels leave it, each with per-channel
    weights: ``||W[:, c]||^2`` of linear readers plus 1 per other reader."""
    g = analysis.graph
    inside = set(tensors)
    out: dict[str, np.ndarray] = {}
    for t in tensors:
        weights = np.zeros(analysis.slots.size[t], dtype=np.float64)
        leaves = False
        for op in g.consumers(t):
            if stays_inside(op, inside):
                continue
            leaves = True
            if linear_consumer_reason(op, t, analysis):
                weights += 1.0
            else:
                w = np.asarray(op.attrs["weight"], dtype=np.float64)
                weights += (np.swapaxes(w, 0, 1).reshape(w.shape[1], -1) ** 2).sum(1)
        if leaves:
            out[t] = weights
    if not out:  # channels that reach nothing outside the group: their own energy
        out = {t: np.ones(analysis.slots.size[t]) for t in tensors if t in analysis.slots.produced}
    return out


def tensor_statistics(model: onnx.ModelProto, calib: CalibrationData, gram_of: list[str], energy_of: list[str],
                      analysis: DependencyAnalysis, progress: Callable[[str], None] = lambda msg: None,
                      ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-position mean over the calibration data of ``a a^T`` (channel Gram matrix) for the tensors
    ``gram_of`` and of ``a_c^2`` (channel energy) for ``energy_of``, channels on ``analysis.slots.axis``."""
    grams = {t: np.zeros((analysis.slots.size[t],) * 2) for t in gram_of}
    energies = {t: np.zeros(analysis.slots.size[t]) for t in energy_of}
    names = list(grams) + list(energies)
    if not names:
        return grams, energies
    counts = dict.fromkeys(names, 0)
    batches = list(_batches(model, calib))
    every = max(1, len(batches) // 8)
    for i, outs in enumerate(_run_with_outputs(model, names, batches), start=1):
        for t, a in zip(names, outs):
            flat = np.moveaxis(np.asarray(a, np.float64), analysis.slots.axis[t], 0)
            flat = flat.reshape(analysis.slots.size[t], -1)
            counts[t] += flat.shape[1]
            if t in grams:
                grams[t] += flat @ flat.T
            else:
                energies[t] += (flat ** 2).sum(1)
        if i % every == 0 or i == len(batches):
            progress(f"similarity: batch {i}/{len(batches)}")
    for t in grams:
        grams[t] /= max(counts[t], 1)
    for t in energies:
        energies[t] /= max(counts[t], 1)
    return grams, energies


def _batches(model: onnx.ModelProto, calib: CalibrationData) -> Iterator[dict[str, np.ndarray]]:
    """Feed dicts at the model's static batch size (1 for a dynamic one); a last, partial batch is
    filled up with the first samples, as the other data-driven criteria do."""
    specs = model_input_specs(model)
    sizes = {s[0] if s else None for s in specs.values()}
    bs = sizes.pop() if len(sizes) == 1 and None not in sizes else 1
    if len(specs) == 1 and len(calib.samples) == 1:
        arrays = {next(iter(specs)): next(iter(calib.samples.values()))}
    else:
        missing = [k for k in specs if k not in calib.samples]
        if missing:
            raise UserError(f"calibration data {calib.source!r} lacks input(s) {', '.join(missing)} "
                            f"(it holds {', '.join(sorted(calib.samples))})")
        arrays = {k: calib.samples[k] for k in specs}
    n = calib.num_samples
    for start in range(0, n, bs):
        idx = np.arange(start, start + bs) % n
        yield {k: np.ascontiguousarray(v[idx], np.float32) for k, v in arrays.items()}


def _run_with_outputs(model: onnx.ModelProto, names: list[str],
                      batches: list[dict[str, np.ndarray]]) -> Iterator[list[np.ndarray]]:
    """Run ``model`` with the tensors ``names`` as its only outputs, one batch at a time."""
    import onnxruntime as ort

    from hwprune_fx.frontends.onnx_io import infer_shapes_static, runtime_source

    m = onnx.ModelProto()
    m.CopyFrom(model)
    infer_shapes_static(m)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(m.graph.value_info) + list(m.graph.output)}
    del m.graph.output[:]
    m.graph.output.extend(onnx.helper.make_tensor_value_info(t, types.get(t) or onnx.TensorProto.FLOAT, None)
                          for t in names)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    with runtime_source(m) as src:
        session = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    del m
    for feeds in batches:
        yield session.run(names, feeds)
