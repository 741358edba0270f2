"""THE preprocessing: one definition imported by training, serving and benchmarks.

Every image, whatever its format or mode (RGB, L, RGBA, P, CMYK, 16-bit, a PNG named ``.jpg``),
decodes into **one defined input**: a grayscale ``uint8`` array ``[1, size, size]`` (MRI scans
carry no colour: one channel is honest and costs a third of the compute).

The two stages are kept apart so decoded images can be cached:

* :func:`decode` + :func:`resize` -> ``uint8 [1, S, S]`` numpy array (with ``head_crop``, the head's
  bounding box padded to a square first, :func:`crop_to_head`; done once per file, cached
  by the DataModule; done per request by the TorchServe handler), and
* :class:`EvalPreset` -> normalised ``float32``, the same numbers for a numpy array (serving) and
  a torch tensor (training adds augmentation: :class:`lightning_app.data.augment.TrainPreset`).

numpy and Pillow only (torch-free servers run it unchanged; the DataModule makes tensors at
its edge). The head crop falls back to the full image wherever no head is found (uniform
images, boxes too small to be a head). This module depends on nothing of ours.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Bumped whenever :func:`decode` or :func:`resize` can produce different pixels, so caches
#: of decoded pixels (keyed by it) are never reused across decoder changes.
DECODER_VERSION = 2
#: Decoded pixel count above which an image is refused before decoding (4096 x 4096). Sized
#: for memory: a decode at the cap holds at most ~4 bytes per pixel at once (~70 MB; an RGBA
#: PNG briefly ~4 copies of 1 byte per pixel), so a serving worker decoding requests one after
#: another stays far below 1 GiB. Real MRI slices are at most a few megapixels (Br35H: 2.1 Mpx).
MAX_PIXELS = 4096 * 4096
#: Early reduction (JPEG DCT scaling, integer box reduction) stops while the image is still at
#: least this many times the target size on each side (the final resize sees enough pixels).
REDUCE_MARGIN = 2
#: Rows of a high-bit-depth image converted to 8 bits at a time (bounds the float64 working set).
STRIP_PIXELS = 1_000_000
#: File formats accepted by :func:`decode` (as identified by content, not by name).
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "BMP", "TIFF", "GIF", "WEBP", "MPO"})

if TYPE_CHECKING:
    import torch

    Pixels = TypeVar("Pixels", np.ndarray, torch.Tensor)


# ---- the head crop (Preprocessing.head_crop) ----------------------------------------
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


class ImageDecodeError(ValueError):
    """The bytes are not an image we can use; the message says why, for a user."""


@dataclass(frozen=True, kw_only=True)
class Preprocessing:
    """What travels with a model: resolution, head crop and normalisation constants.

    ``mean``/``std`` are fixed constants from the config (never statistics of a split),
    applied after scaling pixels to ``[0, 1]``. ``head_crop``: crop to the head's bounding
    box and pad to a square before resizing (:func:`crop_to_head`).
    """

    image_size: int = 128
    mean: float = 0.5
    std: float = 0.25
    head_crop: bool = False

    def as_dict(self) -> dict[str, float | int | bool]:
        """Plain-dict form, as stored in checkpoints and in the ``.mar``.

        ``head_crop`` is only written when on, so artefacts of models without it read the same
        as before (and an artefact without the field loads with ``head_crop=False``).
        """
        return {k: v for k, v in asdict(self).items() if k != "head_crop" or v}

    def load(self, source: bytes | str | Path) -> np.ndarray:
        """Decode and resize one image by this preprocessing: ``uint8 [1, S, S]``."""
        return load(source, image_size=self.image_size, head_crop=self.head_crop)


def decode(
    source: bytes | str | Path, *, max_pixels: int = MAX_PIXELS, target_size: int | None = None
) -> Image.Image:
    """Decode bytes or a file into a grayscale ``L`` image (:func:`open_image`, then :func:`to_grayscale`)."""
    return to_grayscale(open_image(source, max_pixels=max_pixels, target_size=target_size))


def open_image(
    source: bytes | str | Path,
    *,
    max_pixels: int = MAX_PIXELS,
    target_size: int | None = None,
    colour: bool = False,
) -> Image.Image:
    """Decode bytes or a file into a loaded PIL image in its own mode (first frame of an animation).

    Raises :class:`ImageDecodeError` with a user-readable reason for empty input, non-images,
    unsupported formats, truncated files and decompression bombs. With ``target_size``, JPEGs
    are decoded by libjpeg's DCT scaling (1/2, 1/4 or 1/8) straight to grayscale (``YCbCr``
    with ``colour``: the same grey levels plus the chroma), at the smallest scale still at
    least ``REDUCE_MARGIN`` times ``target_size`` a side (other formats: :func:`resize`).
    """
    data = Path(source).read_bytes() if isinstance(source, str | Path) else source
    if not data:
        raise ImageDecodeError("empty input: no image bytes received")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            fmt = image.format or "unknown"
            if fmt not in SUPPORTED_FORMATS:
                raise ImageDecodeError(f"unsupported image format: {fmt}")
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError(f"image too large: {width}x{height} pixels exceeds {max_pixels:,}")
            image.seek(0)
            if target_size and fmt in ("JPEG", "MPO"):
                image.draft("YCbCr" if colour else "L", (REDUCE_MARGIN * target_size,) * 2)
            image.load()
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageDecodeError(f"image too large: over {max_pixels:,} pixels (decompression bomb)") from None
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image: the bytes could not be identified") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"corrupt or truncated image: {exc}") from None
    return image


def _rescale_to_uint8(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float image -> ``L``, stretched over its full range.

    Converted in strips of about ``STRIP_PIXELS`` pixels, so the float64 arithmetic never
    holds a full-size copy (a 49 Mpx image would need ~400 MB per float64 array).
    """
    extrema = image.getextrema()
    low, high = (float(v) for v in extrema[:2])  # type: ignore[arg-type]
    out = np.zeros((image.height, image.width), dtype=np.uint8)
    if high > low and np.isfinite(low) and np.isfinite(high):
        rows = max(1, STRIP_PIXELS // max(1, image.width))
        for top in range(0, image.height, rows):
            strip = np.asarray(
                image.crop((0, top, image.width, min(image.height, top + rows))), dtype=np.float64
            )
            out[top : top + rows] = np.round((strip - low) / (high - low) * 255.0).astype(np.uint8)
    return Image.fromarray(out, mode="L")


def to_grayscale(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit ``L`` deterministically.

    Alpha is composited on black (the MRI background); 16-bit and float images are rescaled
    by their full range.
    """
    image = ImageOps.exif_transpose(image) or image
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _rescale_to_uint8(image)
    if mode == "P":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("L")


def resize(image: Image.Image, *, image_size: int, head_crop: bool = False) -> np.ndarray:
    """Resize a decoded ``L`` image to a square ``uint8`` array ``[1, S, S]``.

    MRI slices are roughly square and centred; a plain resize (no crop) keeps the
    whole skull in view. With ``head_crop`` the image is first cropped to the head and
    padded to a square (:func:`lightning_app.headcrop.crop_to_head`). PIL's antialiased
    bilinear filter is deterministic. Images over
    ``REDUCE_MARGIN`` times the target are first box-reduced by an integer factor (PIL's
    ``reducing_gap``), which is much faster and differs from a one-step resize by about
    one grey level.
    """
    if head_crop:
        image = crop_to_head(image)
    resized = image.resize((image_size, image_size), Image.Resampling.BILINEAR, reducing_gap=REDUCE_MARGIN)
    return np.array(resized, dtype=np.uint8, copy=True)[None]


def load(source: bytes | str | Path, *, image_size: int, head_crop: bool = False) -> np.ndarray:
    """Decode (reduced early to about twice ``image_size``) and resize: ``uint8 [1, S, S]``."""
    return resize(decode(source, target_size=image_size), image_size=image_size, head_crop=head_crop)


class EvalPreset:
    """``uint8 [..., 1, S, S]`` -> normalised ``float32``; works on one image or a batch.

    The same arithmetic for a numpy array (serving, no torch needed) and a torch tensor
    (training), in ``float32`` step by step, so both give bit-identical numbers.
    """

    def __init__(self, *, mean: float, std: float) -> None:
        self.mean = mean
        self.std = std

    def __call__(self, pixels: Pixels) -> Pixels:
        """Scale to ``[0, 1]`` and normalise (a numpy array in, a numpy array out)."""
        if isinstance(pixels, np.ndarray):
            scaled = pixels.astype(np.float32) / np.float32(255.0)
            return (scaled - np.float32(self.mean)) / np.float32(self.std)
        return (pixels.float() / 255.0 - self.mean) / self.std


def preprocess(source: bytes | str | Path, preprocessing: Preprocessing) -> np.ndarray:
    """Bytes or a file -> the model's ``float32 [1, S, S]`` input (the serving path)."""
    pixels = preprocessing.load(source)
    return EvalPreset(mean=preprocessing.mean, std=preprocessing.std)(pixels)
