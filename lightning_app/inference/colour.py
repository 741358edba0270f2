"""The OOD guard's colour check: brain MRIs carry no colour, so a colour image is not one.

THE preprocessing turns every image to grey, so the network (and the Mahalanobis guard on
its features) never sees colour: a colour photo of a coffee cup is scored as a grey one,
and some pass the guard. A scan stored as RGB or ``YCbCr`` differs between its channels
only by compression noise. The check measures the **mean chroma** of the image as decoded
(per pixel the largest minus the smallest of R, G, B, in grey levels, averaged over a
:data:`THUMB` x :data:`THUMB` sample of its pixels, so a large image costs no more than a
small one; 0 for single-channel images) and flags it above :data:`LIMIT`.

:data:`LIMIT` is fixed from the Br35H TRAIN and VALIDATION scans alone: their largest mean
chroma is 12.3 grey levels (a JPEG with faint tint), and the limit is twice that, rounded up. The
export checks it on each data set's own validation scans (:func:`validate_limit`): where
more than 1 % of them would be flagged, the model ships without the check and says why.

Torch-free (Pillow and numpy); the colour comes from the same decode as the grey pixels
(:func:`~lightning_app.transforms.open_image` with ``colour``: a JPEG's grey levels are
unchanged, libjpeg only decodes its chroma as well), so it costs about 0.25 ms a request
(``make bench-decode``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lightning_app.transforms import ImageDecodeError, Preprocessing, open_image, resize, to_grayscale

#: Side (pixels) of the nearest-neighbour sample the chroma is measured on.
THUMB = 64
#: Mean chroma (grey levels, 0-255) above which an image is called a colour image: twice the
#: largest of the Br35H train and validation scans (12.3), rounded up.
LIMIT = 25.0
#: Most of a data set's validation scans the check may flag before the export turns it off.
MAX_VAL_FLAGGED = 0.01
#: Modes with one channel of grey (and alpha): chroma 0 without measuring.
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
WARNING = (
    "This image is in colour (mean chroma {colour:.0f} > {limit:.0f} grey levels), unlike the "
    "greyscale brain MRIs the model was trained on: the probabilities below are not trustworthy."
)


def chroma(image: Image.Image) -> float:
    """Mean chroma of ``image`` in grey levels: per pixel max - min of R, G, B, on a sample.

    The sample is :data:`THUMB` x :data:`THUMB` pixels picked by nearest-neighbour resizing
    (any mode, no full-size copy). 0 for grey modes, and for the rare modes Pillow cannot turn
    into RGB (no colour is measured).
    """
    if image.mode in GREY_MODES:
        return 0.0
    try:
        sample = image.resize((THUMB, THUMB), Image.Resampling.NEAREST).convert("RGB")
    except ValueError:
        return 0.0
    rgb = np.asarray(sample, dtype=np.int16)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]  # per channel: numpy's axis=2 max/min is 10x slower here
    return float((np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)).mean())


def read(source: bytes | str | Path, preprocessing: Preprocessing) -> tuple[np.ndarray, float]:
    """THE preprocessing's ``uint8 [1, S, S]`` pixels of one image, and its mean chroma.

    The pixels are exactly :meth:`Preprocessing.load`'s (raises ``ImageDecodeError`` as it does).
    """
    size = preprocessing.image_size
    image = open_image(source, target_size=size, colour=True)
    pixels = resize(to_grayscale(image), image_size=size, head_crop=preprocessing.head_crop)
    return pixels, chroma(image)


def colour_of(source: bytes | str | Path, image_size: int) -> float:
    """Mean chroma of one image file or bytes, decoded as the service decodes it for ``image_size``."""
    return chroma(open_image(source, target_size=image_size, colour=True))


def check(answer: dict[str, Any], colour: float, limit: float | None) -> dict[str, Any]:
    """Add ``colour`` to the answer's ``in_distribution`` block; over ``limit``, flag it and warn.

    Without a block (a model shipped with no guard) or a ``limit`` the answer is unchanged.
    """
    block = answer.get("in_distribution")
    if block is None or limit is None:
        return answer
    block["colour"] = round(colour, 2)
    block["colour_limit"] = limit
    if colour > limit:
        block["ok"] = False
        answer["warning"] = WARNING.format(colour=colour, limit=limit)
    return answer


def validate_limit(
    val: Iterable[Path], test: Iterable[Path], preprocessing: Preprocessing, limit: float = LIMIT
) -> dict[str, Any]:
    """The export's check of ``limit`` on a data set's own scans: ``metadata["ood"]["colour"]``.

    Measures the validation and test files; ``limit`` is ``None`` (no check shipped) when it
    would flag more than :data:`MAX_VAL_FLAGGED` of validation, or there is none to check.
    """
    val_rate, test_rate = (flagged_share(paths, preprocessing, limit) for paths in (val, test))
    if val_rate is None:
        reason = "no validation scans to check it on"
    elif val_rate > MAX_VAL_FLAGGED:
        reason = f"it would flag {val_rate:.1%} of the validation scans, over {MAX_VAL_FLAGGED:.0%}"
    else:
        reason = ""
    checked = {"limit": None if reason else limit, "val_flagged": val_rate, "test_flagged": test_rate}
    return checked | ({"reason": reason} if reason else {})


def flagged_share(paths: Iterable[Path], preprocessing: Preprocessing, limit: float) -> float | None:
    """Share of the readable images among ``paths`` over ``limit`` (``None``: none readable)."""
    colours = []
    for path in paths:
        try:
            colours.append(colour_of(path, preprocessing.image_size))
        except ImageDecodeError:
            continue
    return float(np.mean(np.asarray(colours) > limit)) if colours else None
