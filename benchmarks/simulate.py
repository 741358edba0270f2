"""Prediction-log records made in-process, and realistic shifts of real scans, for validation.

:func:`records` runs image bytes through the same code as the TorchServe handler
(:class:`~lightning_app.inference.engine.InferenceEngine` +
:class:`~lightning_app.inference.predlog.PredictionLog`) without a server. :data:`SHIFTS`
turns a real scan into the same scan as a different acquisition would give it (each is a
plain PIL/numpy operation on the source image, re-encoded as the source format would be):

| shift | what changes |
|---|---|
| ``blur`` | Gaussian blur, radius 1.5 % of the image width (motion / thick slices) |
| ``noise`` | additive Gaussian noise, sigma 12 grey levels (low field strength, fast sequences) |
| ``low_resolution`` | downsampled to a quarter of each side (a low-resolution export) |
| ``contrast`` | contrast halved around mid-grey (another windowing) |
| ``scanner_look`` | another scanner's look: a smooth multiplicative bias field (+/- 30 %) and gamma 0.7 |
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from lightning_app.inference.artefacts import MODEL_NAME
from lightning_app.inference.engine import InferenceEngine
from lightning_app.inference.predlog import PredictionLog
from lightning_app.inference.records import Request
from lightning_app.inference.settings import LogSettings

Shift = Callable[[Image.Image, np.random.Generator], Image.Image]


def _gray(image: Image.Image) -> Image.Image:
    return image.convert("L")


def blur(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Gaussian blur with a radius of 1.5 % of the width."""
    return _gray(image).filter(ImageFilter.GaussianBlur(radius=max(1.0, 0.015 * image.width)))


def noise(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Additive Gaussian noise, sigma 12 grey levels."""
    array = np.asarray(_gray(image), dtype=np.float64)
    return Image.fromarray(np.clip(array + rng.normal(0, 12, array.shape), 0, 255).astype(np.uint8))


def low_resolution(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A quarter of each side."""
    return _gray(image).resize(
        (max(8, image.width // 4), max(8, image.height // 4)), Image.Resampling.BILINEAR
    )


def contrast(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Contrast halved."""
    return ImageEnhance.Contrast(_gray(image)).enhance(0.5)


def scanner_look(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Smooth multiplicative bias field (random direction, +/- 30 %) and gamma 0.7."""
    array = np.asarray(_gray(image), dtype=np.float64) / 255.0
    h, w = array.shape
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:h, 0:w]
    ramp = (np.cos(angle) * (x / w - 0.5) + np.sin(angle) * (y / h - 0.5)) * 2
    out = np.clip(array * (1 + 0.3 * ramp), 0, 1) ** 0.7
    return Image.fromarray(np.round(out * 255).astype(np.uint8))


SHIFTS: dict[str, Shift] = {
    "blur": blur,
    "noise": noise,
    "low_resolution": low_resolution,
    "contrast": contrast,
    "scanner_look": scanner_look,
}


def shifted(data: bytes, shift: Shift, rng: np.random.Generator) -> bytes:
    """Apply ``shift`` to one image file's bytes; re-encode as JPEG (quality 95) or PNG."""
    with Image.open(io.BytesIO(data)) as image:
        fmt = "JPEG" if image.format == "JPEG" else "PNG"
        out = shift(image, rng)
    buf = io.BytesIO()
    out.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def records(engine: InferenceEngine, images: Sequence[bytes], *, batch: int = 32) -> list[dict[str, Any]]:
    """Prediction-log records of ``images``, as the handler would log them (every one kept)."""
    log = PredictionLog(engine, MODEL_NAME, settings=LogSettings(), stream=io.StringIO())
    out: list[dict[str, Any]] = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        pixels = np.stack([engine.decode(b) for b in chunk])
        requests = [Request(i, b, f"sim-{start + i}", 0.0) for i, b in enumerate(chunk)]
        forward = engine.forward(pixels)
        out += log.predictions(requests, pixels, engine.answers(forward), 0.0, forward=forward)
    return out
