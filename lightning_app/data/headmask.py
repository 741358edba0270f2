"""The head's pixels in a preprocessed scan, without annotations.

One mask for two uses: the heatmap benchmarks score how much of a heatmap falls inside the
head (eroded, so the skull's rim counts as border), and the background-swap augmentation
(:class:`~lightning_app.data.augment.BackgroundSwap`) replaces everything outside it
(dilated, so the whole skull is kept).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def otsu(values: np.ndarray) -> float:
    """Otsu's threshold of ``uint8`` values (the grey level that best splits them in two)."""
    hist = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    p = hist / hist.sum()
    omega, mu = np.cumsum(p), np.cumsum(p * np.arange(256))
    between = (mu[-1] * omega - mu) ** 2 / np.clip(omega * (1 - omega), 1e-12, None)
    return float(np.argmax(between))


def head_mask(image: np.ndarray, *, erode: int = 0, dilate: int = 0) -> np.ndarray:
    """Boolean head mask of a ``uint8 [S, S]`` scan.

    Foreground above Otsu's threshold, closed, holes filled, the largest component, then
    eroded or dilated by that many pixels. A uniform image has no foreground: all ``False``.
    """
    if image.min() == image.max():
        return np.zeros(image.shape, dtype=bool)
    fg = image > otsu(image)
    fg = ndimage.binary_fill_holes(ndimage.binary_closing(fg, iterations=2))
    labels, n = ndimage.label(fg)
    if n == 0:
        return np.asarray(fg, dtype=bool)
    mask = labels == 1 + int(np.argmax(ndimage.sum(fg, labels, range(1, n + 1))))
    if erode:
        mask = ndimage.binary_erosion(mask, iterations=erode)
    if dilate:
        mask = ndimage.binary_dilation(mask, iterations=dilate)
    return np.asarray(mask, dtype=bool)
