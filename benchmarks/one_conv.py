"""One conv workload tuned on ``tvm-llvm`` and timed beside onnxruntime: the TVM tuning experiments' bench."""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from hwprune_fx.oracle import random_inputs
from hwprune_fx.pipeline import load_onnx_model
from hwprune_fx.targets import TimingConfig
from hwprune_fx.targets.ort_cpu import OrtCpuBackend
from hwprune_fx.zoo import export_onnx

__all__ = ["WORKLOAD", "ConvBench", "conv_block", "conv_bench", "timing_cells"]

WORKLOAD = "Conv 64->64 3x3 + BN + ReLU, 1x64x56x56"


def conv_block() -> torch.nn.Module:
    """ResNet-18 layer1's 3x3 conv with its BatchNorm and ReLU (random weights, seed 0)."""
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3, padding=1, bias=False), torch.nn.BatchNorm2d(64),
                                torch.nn.ReLU())
    return block.eval()


@dataclass
class ConvBench:
    model: onnx.ModelProto
    feeds: dict[str, np.ndarray]
    timing: TimingConfig
    ort: OrtCpuBackend

    def time_beside_onnxruntime(self, runs: dict[str, dict[str, Any]], rounds: int) -> list[float]:
        """Each run's ``backend`` timed in ``rounds`` rounds alternating with onnxruntime (order
        reversed every other round), appended to its ``"ms"``; onnxruntime's round medians."""
        ort_ms: list[float] = []
        order = list(runs)
        for r in range(rounds):
            ort_ms.append(self.ort.measure(self.model, self.feeds).median_ms)
            for key in (order if r % 2 == 0 else order[::-1]):
                runs[key]["ms"].append(runs[key]["backend"].measure(self.model, self.feeds).median_ms)
        return ort_ms


def conv_bench(work: Path, repeat: int) -> ConvBench:
    """The conv exported to ONNX under ``work``, its feeds, 1-thread timing and onnxruntime."""
    path = work / "conv.onnx"
    export_onnx(conv_block(), (1, 64, 56, 56), path)
    model = load_onnx_model(path).original
    timing = TimingConfig(warmup=10, repeat=repeat, threads=1)
    return ConvBench(model, random_inputs(model, batch=1), timing,
                     OrtCpuBackend(timing=timing, cache_dir=work / "ort", use_cache=False))


def timing_cells(run_ms: list[float], ort_median: float) -> dict[str, Any]:
    """A tuned module's round medians against onnxruntime's median, as every row records them."""
    ms = statistics.median(run_ms)
    return {"tvm_ms": round(ms, 4), "tvm_round_ms": [round(x, 4) for x in run_ms], "ort_ms": round(ort_median, 4),
            "tvm_over_ort": round(ms / ort_median, 3)}
