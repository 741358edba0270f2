"""Occlusion heatmaps: how much the answer drops when a patch of the scan is blacked out.

Zeiler & Fergus (2014): the scan is cut into a ``g x g`` grid of square patches
(:data:`CELLS` a side, 16 px at 128 px); each patch in turn is set to black, the background
of an MRI (no tissue), and the whole batch of occluded copies goes through the SAME forward
pass that answers ``/predictions`` (eager fp32, ONNX fp32 or int8, a single network or an
ensemble). A cell's value is the drop of the target class's log-odds,
``max(0, lo(x) - lo(x with the cell black))`` with ``lo = z_c - logsumexp(z_other)``, which is
the same for logits and for an ensemble's log-probabilities.

Forward passes only, so it needs no torch and no gradient: a torch-free server explains any
backbone with it. The price is ``1 + g * g`` forward passes an image (65 at the default).
Blacking out the black background changes nothing whatever the weights, so part of the
map's mass on the head is the method's, not the model's: ``make bench-localise`` scores every
method on a network with randomised weights too, beside a model-free map of each cell's
brightness (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

#: Patches a side: 8x8 cells, each 16 px wide at 128 px (chosen out of fold: docs/benchmarks.md).
CELLS = 8
#: The layer name answers give for occlusion: the network's input pixels.
LAYER = "input"
#: Occluded copies per forward call (bounds the memory of one explanation).
CHUNK = 64

Logits = Callable[[np.ndarray], np.ndarray]  # uint8 [N, 1, S, S] -> logits [N, C]


def log_odds(logits: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """``z_c - logsumexp(z_other)`` of each row's chosen class ``c`` (``float64 [N]``)."""
    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(z))
    others = z.copy()
    others[rows, chosen] = -np.inf
    peak = others.max(axis=1, keepdims=True)
    rest = peak[:, 0] + np.log(np.exp(others - peak).sum(axis=1))
    out: np.ndarray = z[rows, chosen] - rest
    return out


def occluded(image: np.ndarray, cells: int) -> np.ndarray:
    """``[cells * cells, 1, S, S]`` copies of one ``uint8 [1, S, S]`` image, one patch black in each."""
    size = image.shape[-1]
    edges = np.linspace(0, size, cells + 1).round().astype(int)
    copies = np.repeat(image[None], cells * cells, axis=0)
    for k in range(cells * cells):
        row, col = divmod(k, cells)
        copies[k, :, edges[row] : edges[row + 1], edges[col] : edges[col + 1]] = 0
    return copies


def occlusion_maps(
    logits_of: Logits, pixels: Any, chosen: list[int], logits: Any = None, cells: int = CELLS
) -> np.ndarray:
    """Raw maps ``float32 [N, cells, cells]``: each patch's drop of the chosen class's log-odds.

    ``logits_of`` runs each image's occluded copies, :data:`CHUNK` at a time; ``logits`` are
    the images' own (the served pass made them), else ``logits_of`` runs the images too.
    """
    pixels = np.asarray(pixels, dtype=np.uint8)
    target = np.asarray(chosen, dtype=np.int64)
    base = log_odds(logits_of(pixels) if logits is None else logits, target)
    out = np.zeros((len(pixels), cells * cells), dtype=np.float32)
    for n, image in enumerate(pixels):
        copies = occluded(image, cells)
        chunks = [copies[s : s + CHUNK] for s in range(0, len(copies), CHUNK)]
        odds = [log_odds(logits_of(c), np.full(len(c), target[n])) for c in chunks]
        out[n] = np.maximum(base[n] - np.concatenate(odds), 0)
    return out.reshape(len(pixels), cells, cells)
