"""THE preprocessing: one definition imported by training, serving and benchmarks.

Every image, whatever its file format or mode (RGB, L, RGBA, P, CMYK, 16-bit, a PNG
named ``.jpg``), decodes into **one defined input**: a single-channel (grayscale)
``uint8`` tensor of shape ``[1, size, size]``.  MRI scans carry no colour information,
so one channel is the honest representation and it costs a third of the compute.

The two stages are kept apart so decoded images can be cached:

* :func:`decode` + :func:`resize` -> ``uint8 [1, S, S]`` (with ``head_crop``, the head's
  bounding box padded to a square first, :mod:`lightning_app.headcrop`; done once per file, cached
  by the DataModule; done per request by the TorchServe handler), and
* :class:`EvalPreset` / :class:`TrainPreset` -> normalised ``float32`` tensor.

This module depends on nothing of ours but :mod:`lightning_app.headcrop` (the optional head
crop, ``Preprocessing.head_crop``; ``PIL`` and ``numpy`` only).
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from lightning_app.headcrop import crop_to_head

#: Bumped whenever :func:`decode` or :func:`resize` can produce different pixels, so caches
#: of decoded pixels (keyed by it) are never reused across decoder changes.
DECODER_VERSION = 2
#: Decoded pixel count above which an image is refused before decoding (4096 x 4096). Sized
#: for memory: a decode at the cap holds at most ~4 bytes per pixel at once (~70 MB; an RGBA
#: PNG briefly ~4 copies of 1 byte per pixel), so a serving worker decoding requests one after
#: another stays far below 1 GiB. Real MRI slices are at most a few megapixels (Br35H: 2.1 Mpx).
MAX_PIXELS = 4096 * 4096
#: Early reduction (JPEG DCT scaling, integer box reduction) stops while the image is still at
#: least this many times the target size on each side, so the final antialiased resize sees
#: enough pixels.
REDUCE_MARGIN = 2
#: Rows of a high-bit-depth image converted to 8 bits at a time (bounds the float64 working set).
STRIP_PIXELS = 1_000_000
#: File formats accepted by :func:`decode` (as identified by content, not by name).
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "BMP", "TIFF", "GIF", "WEBP", "MPO"})


class ImageDecodeError(ValueError):
    """The bytes are not an image we can use; the message says why, for a user."""


@dataclass(frozen=True, kw_only=True)
class Preprocessing:
    """What travels with a model: resolution, head crop and normalisation constants.

    ``mean``/``std`` are fixed constants from the config (never statistics of a split),
    applied after scaling pixels to ``[0, 1]``. ``head_crop``: crop to the head's bounding
    box and pad to a square before resizing (:func:`lightning_app.headcrop.crop_to_head`).
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
        out: dict[str, float | int | bool] = {
            "image_size": self.image_size,
            "mean": self.mean,
            "std": self.std,
        }
        return out | ({"head_crop": True} if self.head_crop else {})

    def load(self, source: bytes | str | Path) -> torch.Tensor:
        """Decode and resize one image by this preprocessing: ``uint8 [1, S, S]``."""
        return load(source, image_size=self.image_size, head_crop=self.head_crop)


def decode(
    source: bytes | str | Path, *, max_pixels: int = MAX_PIXELS, target_size: int | None = None
) -> Image.Image:
    """Decode bytes or a file into a grayscale ``L`` image.

    Raises :class:`ImageDecodeError` with a user-readable reason for empty input,
    non-images, unsupported formats, truncated files and decompression bombs.
    Animated images use their first frame; alpha is composited on black (the MRI
    background); 16-bit and float images are rescaled by their full range.

    With ``target_size`` the image is only needed at that size: JPEGs are then decoded by
    libjpeg's DCT scaling (1/2, 1/4 or 1/8) straight to grayscale, to the smallest scale
    still at least ``REDUCE_MARGIN`` times ``target_size`` on each side (other formats
    are reduced early by :func:`resize`).
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
                image.draft("L", (REDUCE_MARGIN * target_size, REDUCE_MARGIN * target_size))
            image.load()
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageDecodeError(f"image too large: over {max_pixels:,} pixels (decompression bomb)") from None
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image: the bytes could not be identified") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"corrupt or truncated image: {exc}") from None
    return to_grayscale(image)


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
    """Convert any PIL mode to 8-bit ``L`` deterministically."""
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


def resize(image: Image.Image, *, image_size: int, head_crop: bool = False) -> torch.Tensor:
    """Resize a decoded ``L`` image to a square ``uint8`` tensor ``[1, S, S]``.

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
    return torch.from_numpy(np.array(resized, dtype=np.uint8, copy=True)).unsqueeze(0)


def load(source: bytes | str | Path, *, image_size: int, head_crop: bool = False) -> torch.Tensor:
    """Decode (reduced early to about twice ``image_size``) and resize: ``uint8 [1, S, S]``."""
    return resize(decode(source, target_size=image_size), image_size=image_size, head_crop=head_crop)


class EvalPreset:
    """``uint8 [..., 1, S, S]`` -> normalised ``float32``; works on one image or a batch."""

    def __init__(self, *, mean: float, std: float) -> None:
        self.mean = mean
        self.std = std

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """Scale to ``[0, 1]`` and normalise."""
        return (pixels.float() / 255.0 - self.mean) / self.std


class IntensityJitter:
    """Random intensity changes of one ``float [1, S, S]`` image in ``[0, 1]`` (what drift brings).

    Each, with probability 1/2: contrast about the mean (factor ``1 +- 0.3 k``), brightness
    (``+- 0.08 k``), gamma (``exp(+- 0.3 k)``), Gaussian blur (sigma up to ``0.8 k`` pixels) and
    Gaussian noise (sd up to ``0.03 k``); ``k`` is the strength (0: off).
    """

    def __init__(self, strength: float) -> None:
        self.k = strength

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Jitter ``x`` (values kept in ``[0, 1]``)."""
        from torchvision.transforms.v2 import functional as TF

        def coin() -> bool:
            return bool(torch.rand(()) < 0.5)

        def uniform(half_width: float) -> float:
            return float((torch.rand(()) * 2 - 1) * half_width)

        k = self.k
        if coin():
            x = (x - x.mean()) * (1 + uniform(0.3 * k)) + x.mean()
        if coin():
            x = x + uniform(0.08 * k)
        if coin():
            x = x.clamp(0, 1) ** math.exp(uniform(0.3 * k))
        if coin() and k > 0:
            sigma = 0.1 + float(torch.rand(())) * 0.8 * k
            x = TF.gaussian_blur(x, kernel_size=[5, 5], sigma=[sigma, sigma])
        if coin():
            x = x + torch.randn_like(x) * float(torch.rand(())) * 0.03 * k
        return x.clamp(0, 1)


class TrainPreset(EvalPreset):
    """Eval preset plus light augmentation suited to axial MRI slices.

    Horizontal flips (brains are near-symmetric) and a small random affine
    (rotation, translation, scale), applied to the ``uint8`` image before
    normalisation so padding stays black; then, with ``intensity > 0``,
    :class:`IntensityJitter` of that strength.
    """

    def __init__(
        self,
        *,
        mean: float,
        std: float,
        hflip_prob: float = 0.5,
        degrees: float = 10.0,
        translate: float = 0.05,
        scale: tuple[float, float] = (0.9, 1.1),
        intensity: float = 0.0,
    ) -> None:
        super().__init__(mean=mean, std=std)
        self.jitter = IntensityJitter(intensity) if intensity > 0 else None
        from torchvision.transforms import v2

        steps: list[torch.nn.Module] = []
        if hflip_prob > 0:
            steps.append(v2.RandomHorizontalFlip(p=hflip_prob))
        if degrees > 0 or translate > 0 or scale != (1.0, 1.0):
            steps.append(v2.RandomAffine(degrees=degrees, translate=(translate, translate), scale=scale))
        self.augment = v2.Compose(steps)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """Augment one ``uint8`` image, then normalise."""
        pixels = self.augment(pixels)
        if self.jitter is None:
            return super().__call__(pixels)
        return (self.jitter(pixels.float() / 255.0) - self.mean) / self.std


def preprocess(source: bytes | str | Path, preprocessing: Preprocessing) -> torch.Tensor:
    """Bytes or a file -> the model's ``float32 [1, S, S]`` input (the serving path)."""
    pixels = preprocessing.load(source)
    return EvalPreset(mean=preprocessing.mean, std=preprocessing.std)(pixels)
