"""Label-free cues: how far a data set's labels can be read off framing and brightness alone.

Two numbers per scan, from the pixels the model sees, that no lesion is needed for: the share
of the frame filled by the head (grey above :data:`FILLED`) and the mean grey level. On
Br35H the tumour scans are framed tighter and brighter than the normal ones, so each cue
alone separates the classes in part (docs/benchmarks.md, ``make bench-shortcut
PROBE=framing``). A model can score on such a cue without looking at any lesion, so a new
data version should show how strong its cues are (``python -m lightning_app.data stats``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc

FILLED = 20  # a grey level above this is head, not background

#: The cues, by name, in the order the tables show them, and the decimals they are shown with.
NAMES = (f"filled share (grey > {FILLED})", "mean grey level")
DIGITS = dict(zip(NAMES, (2, 0), strict=True))


def medians(values: dict[str, np.ndarray], where: np.ndarray | slice = slice(None)) -> list[str]:
    """Each cue's median over the scans ``where`` selects, as table cells."""
    return [f"{np.median(v[where]):.{DIGITS[name]}f}" for name, v in values.items()]


def of(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Each cue of each scan: ``pixels`` is ``uint8 [N, ...]`` (one scan per row)."""
    flat = np.asarray(pixels).reshape(len(pixels), -1).astype(np.float64)
    return dict(zip(NAMES, ((flat > FILLED).mean(axis=1), flat.mean(axis=1)), strict=True))


def auroc(values: np.ndarray, positive: np.ndarray) -> float:
    """How well one number per scan alone ranks the ``positive`` scans above the rest.

    0.5 means the cue tells nothing; far from 0.5 either way, the labels can be read off
    it in part. NaN unless both kinds of scan are present.
    """
    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return float("nan")
    values = np.asarray(values, dtype=np.float64)
    span = float(values.max() - values.min()) or 1.0  # into [0, 1]: torchmetrics reads scores there
    scores = torch.from_numpy((values - values.min()) / span)
    return float(binary_auroc(scores, torch.from_numpy(positive)))


def table(pixels: np.ndarray, labels: Sequence[str]) -> list[str]:
    """Per class: scans, each cue's median, and each cue's AUROC of that class against the rest."""
    names = np.asarray(labels)
    values = of(pixels)
    head = " | ".join(f"{name}, median | AUROC" for name in NAMES)
    lines = [f"| class | scans | {head} |", "|---|---:" + "|---:|---:" * len(NAMES) + "|"]
    for label in sorted(set(names.tolist())):
        mine = names == label
        shown = medians(values, mine)
        cells = [f"{m} | {auroc(v, mine):.2f}" for m, v in zip(shown, values.values(), strict=True)]
        lines.append(f"| {label} | {int(mine.sum())} | " + " | ".join(cells) + " |")
    return lines


def balancing_weights(pixels: np.ndarray, labels: np.ndarray, bins: int) -> np.ndarray:
    """Per-scan sampling weights under which the cues no longer tell the class.

    Each cue is cut at its quantiles into ``bins`` bins; in every cell of that grid each class
    present gets the same total weight (the cell's own total is kept), so a scan whose class is
    rare for its framing and brightness (a dim, loosely framed tumour) is drawn more often and
    a typical one less. A cell holding one class only keeps weight 1 per scan.
    """
    labels = np.asarray(labels)
    cells = np.zeros(len(labels), dtype=np.int64)
    for values in of(pixels).values():
        edges = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
        cells = cells * bins + np.searchsorted(edges, values, side="right")
    weights = np.ones(len(labels))
    for cell in np.unique(cells):
        here = cells == cell
        classes, counts = np.unique(labels[here], return_counts=True)
        for label, count in zip(classes, counts, strict=True):
            weights[here & (labels == label)] = here.sum() / (len(classes) * count)
    return weights
