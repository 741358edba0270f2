"""Draw the server's heatmap over the scan (numpy + Pillow only; the page imports no torch).

The model sees the whole image resized to a square (no crop), so its heatmap grid maps
linearly onto the original picture: the heatmap is stretched back to the scan's own aspect
ratio, coloured (blue = no evidence -> red = strongest) and blended with per-pixel alpha
``opacity * heat``, so cold regions leave the scan visible.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

#: Longest side of the picture shown on the page.
DISPLAY_SIZE = 384
#: Colour ramp anchors (0 -> 1): dark blue, blue, cyan, yellow, red, dark red ("jet").
_ANCHORS = np.array([[0, 0, 0.5], [0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0], [0.5, 0, 0]], dtype=np.float64)


def colourise(heat: np.ndarray) -> np.ndarray:
    """``float [H, W]`` in ``[0, 1]`` -> ``float RGB [H, W, 3]`` in ``[0, 1]``."""
    stops = np.linspace(0.0, 1.0, len(_ANCHORS))
    flat = np.clip(heat, 0.0, 1.0).ravel()
    rgb = np.stack([np.interp(flat, stops, _ANCHORS[:, c]) for c in range(3)], axis=1)
    return rgb.reshape(*heat.shape, 3)


def scan_image(scan: Path | bytes) -> Image.Image | None:
    """The scan as 8-bit grayscale, longest side :data:`DISPLAY_SIZE`; ``None`` if Pillow cannot read it."""
    try:
        with Image.open(io.BytesIO(scan) if isinstance(scan, bytes) else scan) as opened:
            image = opened.convert("L")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    scale = DISPLAY_SIZE / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def overlay(
    scan: Path | bytes, heatmap_png: bytes | None, *, show: bool = True, opacity: float = 0.5
) -> np.ndarray | None:
    """The scan (RGB ``uint8``) with the heatmap blended in when ``show``; ``None`` if unreadable."""
    image = scan_image(scan)
    if image is None:
        return None
    gray = np.asarray(image, dtype=np.float64)[..., None].repeat(3, axis=2) / 255.0
    if not show or heatmap_png is None:
        return np.asarray((gray * 255).round(), dtype=np.uint8)
    with Image.open(io.BytesIO(heatmap_png)) as raw:
        heat_image = raw.convert("L").resize(image.size, Image.Resampling.BILINEAR)
    heat = np.asarray(heat_image, dtype=np.float64) / 255.0
    alpha = np.clip(opacity, 0.0, 1.0) * heat[..., None]
    blended = (1.0 - alpha) * gray + alpha * colourise(heat)
    return np.asarray((blended * 255).round(), dtype=np.uint8)
