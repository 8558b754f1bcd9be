"""Calibration data for data-driven criteria: ``.npz``/``.npy`` input batches or a folder of images.

Data-driven criteria (``taylor``, ``ig``, ``similarity``) refuse to run without real inputs:
random noise would rank channels by how they react to noise, which is not what a user asks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from hwprune_fx.errors import UserError

__all__ = ["CalibrationData", "CalibrationSource", "ImageOptions", "load_calibration", "resolve_calibration",
           "model_input_specs", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageOptions:
    """How a folder of images becomes input tensors (the usual ImageNet preprocessing by default)."""

    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    resize: int | None = None  # shorter side before the centre crop; default: crop size * 256/224


@dataclass
class CalibrationData:
    """``samples[input_name]`` holds N samples with the model's per-sample shape (no batch axis)."""

    samples: dict[str, np.ndarray]
    source: str

    @property
    def num_samples(self) -> int:
        return len(next(iter(self.samples.values())))

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Feed dicts of ``batch_size`` samples (the last one may be smaller)."""
        for start in range(0, self.num_samples, batch_size):
            yield {k: v[start:start + batch_size] for k, v in self.samples.items()}

    def limit(self, n: int | None) -> "CalibrationData":
        if n is None or n >= self.num_samples:
            return self
        return CalibrationData({k: v[:n] for k, v in self.samples.items()}, self.source)


@dataclass(frozen=True)
class CalibrationSource:
    """Where calibration data comes from and how much of it to use (``--calib``, ``--calib-limit``...)."""

    path: str
    limit: int | None = 64
    image: ImageOptions = ImageOptions()


def resolve_calibration(calib: "str | os.PathLike | CalibrationSource | CalibrationData | None",
                        specs: dict[str, Sequence[int | None]]) -> CalibrationData | None:
    """Calibration data for a model with inputs ``specs``: loaded from a path or source, or passed through.

    A bare path is read with the defaults of :class:`CalibrationSource` (the first 64 samples).
    """
    if calib is None or isinstance(calib, CalibrationData):
        return calib
    src = calib if isinstance(calib, CalibrationSource) else CalibrationSource(os.fspath(calib))
    if src.limit is not None and src.limit < 1:
        raise UserError(f"--calib-limit must be >= 1, got {src.limit}")
    return load_calibration(src.path, specs, limit=src.limit, image=src.image)


def model_input_specs(model: "object") -> dict[str, tuple[int | None, ...]]:
    """Graph inputs of an ONNX model (initializers excluded): name -> shape with None for dynamic dims."""
    inits = {i.name for i in model.graph.initializer}
    specs = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        specs[inp.name] = tuple(d.dim_value if d.dim_value > 0 else None for d in inp.type.tensor_type.shape.dim)
    return specs


def load_calibration(path: str | os.PathLike, specs: dict[str, Sequence[int | None]], *,
                     limit: int | None = None, image: ImageOptions = ImageOptions()) -> CalibrationData:
    """Load calibration inputs for a model whose inputs are ``specs`` (name -> shape incl. batch axis).

    ``.npz``: one array per input name (or a single array for a single-input model), first axis = samples.
    ``.npy``: one array for a single-input model. A folder: images, resized, centre-cropped and normalised
    to the (single, NCHW) input's shape.
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"calibration data {str(p)!r} does not exist")
    if p.is_dir():
        data = _load_images(p, specs, image)
    elif p.suffix == ".npz":
        data = _load_npz(p, specs)
    elif p.suffix == ".npy":
        data = _load_npy(p, specs)
    else:
        raise UserError(f"calibration data {str(p)!r}: expected a .npz or .npy file or a folder of images")
    _check_shapes(data, specs)
    return data.limit(limit)


def _single_input(specs: dict[str, Sequence[int | None]], what: str) -> str:
    if len(specs) != 1:
        raise UserError(f"{what} holds one array but the model has {len(specs)} inputs "
                        f"({', '.join(specs)}); use a .npz keyed by input name")
    return next(iter(specs))


def _load_npz(p: Path, specs: dict[str, Sequence[int | None]]) -> CalibrationData:
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read calibration data {str(p)!r}: {e}") from None
    if not arrays:
        raise UserError(f"calibration data {str(p)!r} holds no arrays")
    if set(specs) <= set(arrays):
        return CalibrationData({k: _as_float(arrays[k], p) for k in specs}, str(p))
    if len(arrays) == 1:
        name = _single_input(specs, f"calibration data {str(p)!r}")
        return CalibrationData({name: _as_float(next(iter(arrays.values())), p)}, str(p))
    missing = sorted(set(specs) - set(arrays))
    raise UserError(f"calibration data {str(p)!r} lacks input(s) {', '.join(missing)} "
                    f"(it holds {', '.join(sorted(arrays))})")


def _load_npy(p: Path, specs: dict[str, Sequence[int | None]]) -> CalibrationData:
    name = _single_input(specs, f"calibration data {str(p)!r}")
    try:
        arr = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read calibration data {str(p)!r}: {e}") from None
    return CalibrationData({name: _as_float(arr, p)}, str(p))


def _as_float(arr: np.ndarray, p: Path) -> np.ndarray:
    if not np.issubdtype(arr.dtype, np.number):
        raise UserError(f"calibration data {str(p)!r} holds a non-numeric array ({arr.dtype})")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _check_shapes(data: CalibrationData, specs: dict[str, Sequence[int | None]]) -> None:
    counts = {len(v) for v in data.samples.values()}
    if len(counts) != 1 or 0 in counts:
        raise UserError(f"calibration data {data.source!r}: every input needs the same, non-zero number of samples")
    for name, arr in data.samples.items():
        want = tuple(specs[name])[1:]
        got = arr.shape[1:]
        if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
            shape = "x".join("?" if w is None else str(w) for w in want)
            raise UserError(f"calibration data {data.source!r}: input {name!r} has samples of shape "
                            f"{'x'.join(map(str, got))}, the model expects Nx{shape}")


def _load_images(folder: Path, specs: dict[str, Sequence[int | None]], opts: ImageOptions) -> CalibrationData:
    from PIL import Image, UnidentifiedImageError

    name = _single_input(specs, f"image folder {str(folder)!r}")
    shape = tuple(specs[name])
    if len(shape) != 4 or shape[2] is None or shape[3] is None or shape[1] not in (1, 3):
        raise UserError(f"image folder {str(folder)!r}: the model input {name!r} is not a static NCHW image "
                        f"with 1 or 3 channels; give a .npz instead")
    channels, height, width = shape[1], shape[2], shape[3]
    files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"image folder {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    mean = np.asarray(opts.mean[:channels], np.float32).reshape(-1, 1, 1)
    std = np.asarray(opts.std[:channels], np.float32).reshape(-1, 1, 1)
    short = opts.resize or int(round(max(height, width) * 256 / 224))
    out = []
    for f in files:
        try:
            with Image.open(f) as im:
                im = im.convert("RGB" if channels == 3 else "L")
                scale = short / min(im.size)
                im = im.resize((max(width, round(im.size[0] * scale)), max(height, round(im.size[1] * scale))),
                               Image.BILINEAR)
                left, top = (im.size[0] - width) // 2, (im.size[1] - height) // 2
                im = im.crop((left, top, left + width, top + height))
                arr = np.asarray(im, np.float32) / 255.0
        except (OSError, UnidentifiedImageError) as e:
            raise UserError(f"cannot read image {str(f)!r}: {e}") from None
        arr = arr.reshape(height, width, -1).transpose(2, 0, 1)
        out.append((arr - mean) / std)
    return CalibrationData({name: np.stack(out).astype(np.float32)}, str(folder))
