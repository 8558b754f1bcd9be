"""Shared fixtures: small ONNX models built from torchvision definitions (no download)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest


@pytest.fixture(scope="session")
def torchvision_onnx(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, int | None], Path]:
    """Export (once per session) a randomised torchvision model to ONNX at a small input size."""
    from hwprune_fx.zoo import build_model, export_onnx, input_shape_for

    root = tmp_path_factory.mktemp("zoo")
    cache: dict[tuple[str, int | None], Path] = {}

    def get(name: str, size: int | None = 64) -> Path:
        key = (name, size)
        if key not in cache:
            path = root / f"{name}_{size}.onnx"
            export_onnx(build_model(name), input_shape_for(name, size), path)
            cache[key] = path
        return cache[key]

    return get


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small models: a second intra-op thread only adds contention on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
