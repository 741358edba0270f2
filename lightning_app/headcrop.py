"""The head crop of THE preprocessing (``Preprocessing.head_crop`` in :mod:`lightning_app.transforms`).

Br35H scans come with wide black borders, burnt-in text and heads of every size and aspect;
a plain resize squashes all of that to the model's square. With the head crop, the decoded
grayscale image is cropped to the head's bounding box, padded to a centred black square and
only then resized, so the head fills the input at its true aspect ratio.

Robust by construction: a uniform image (black, white, flat grey), a box too small to be a
head, or a 1-pixel image gives ``None`` from :func:`head_box`, and :func:`crop_to_head` then
returns the image unchanged (the full image, as without the crop). ``PIL`` and ``numpy``
only: serving uses it through the same preprocessing.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: :func:`crop_to_head`: side of the thumbnail the head is found on, the threshold between the
#: dark and bright ends (2nd and 99th percentiles), the margin kept around the head, and the
#: least share of the image's area the head must cover (else the full image is used).
CROP_THUMB = 128
CROP_LEVEL = 0.15
CROP_MARGIN = 0.03
CROP_MIN_AREA = 0.1


def _longest_run(active: np.ndarray, gap: int) -> tuple[int, int] | None:
    """``[start, stop)`` of the longest run of ``True`` in ``active``, bridging gaps up to ``gap``."""
    index = np.flatnonzero(active)
    if not len(index):
        return None
    breaks = np.flatnonzero(np.diff(index) > gap + 1)
    starts = np.concatenate(([0], breaks + 1))
    stops = np.concatenate((breaks, [len(index) - 1]))
    best = int(np.argmax(index[stops] - index[starts]))
    return int(index[starts[best]]), int(index[stops[best]]) + 1


def _open3(mask: np.ndarray) -> np.ndarray:
    """Morphological opening of a boolean image by a 3x3 square (erode, then dilate)."""
    h, w = mask.shape
    eroded, padded = mask.copy(), np.pad(mask, 1)
    for dy, dx in np.ndindex(3, 3):
        eroded &= padded[dy : dy + h, dx : dx + w]
    opened, padded = eroded.copy(), np.pad(eroded, 1)
    for dy, dx in np.ndindex(3, 3):
        opened |= padded[dy : dy + h, dx : dx + w]
    return opened


def head_box(image: Image.Image) -> tuple[int, int, int, int] | None:
    """The head's bounding box ``(left, top, right, bottom)`` in ``image``, or ``None``.

    Found on a thumbnail: pixels brighter than :data:`CROP_LEVEL` of the way from the dark
    (2nd percentile) to the bright end (99th), opened by a 3x3 square (thin burnt-in text
    and noise go), then per axis the longest run of rows/columns holding
    a real share of them (a label separated from the head by background is left out).
    ``None`` (use the whole image) for uniform images (black, white, flat grey), and when
    the box is under :data:`CROP_MIN_AREA` of the image.
    """
    thumb = image.copy()
    thumb.thumbnail((CROP_THUMB, CROP_THUMB), Image.Resampling.BILINEAR)
    pixels = np.asarray(thumb, dtype=np.uint8)
    cumulative = np.cumsum(np.bincount(pixels.ravel(), minlength=256)) / pixels.size
    low, high = (int(np.searchsorted(cumulative, q)) for q in (0.02, 0.99))
    if high - low < 16:  # uniform: nothing to find
        return None
    opened = _open3(pixels > low + CROP_LEVEL * (high - low))
    if not opened.any():
        return None
    gap = max(1, round(0.02 * max(opened.shape)))
    rows = _longest_run(opened.sum(axis=1) >= 0.05 * opened.sum(axis=1).max(), gap)
    cols = _longest_run(opened.sum(axis=0) >= 0.05 * opened.sum(axis=0).max(), gap)
    if rows is None or cols is None:
        return None
    sy, sx = image.height / pixels.shape[0], image.width / pixels.shape[1]
    margin = CROP_MARGIN * max(image.size)
    left, right = max(0.0, cols[0] * sx - margin), min(float(image.width), cols[1] * sx + margin)
    top, bottom = max(0.0, rows[0] * sy - margin), min(float(image.height), rows[1] * sy + margin)
    if (right - left) * (bottom - top) < CROP_MIN_AREA * image.width * image.height:
        return None
    return round(left), round(top), round(right), round(bottom)


def crop_to_head(image: Image.Image) -> Image.Image:
    """Crop an ``L`` image to the head's box (:func:`head_box`) and pad it to a centred square.

    Padding is black (the MRI background). Without a box the image is returned unchanged.
    """
    box = head_box(image)
    if box is None:
        return image
    head = image.crop(box)
    side = max(head.size)
    square = Image.new("L", (side, side), 0)
    square.paste(head, ((side - head.width) // 2, (side - head.height) // 2))
    return square
