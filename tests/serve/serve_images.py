"""Request bodies for the bad-input and odd-format tests (built from real Br35H scans)."""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import cache

import numpy as np
from PIL import Image

from lightning_app.data.sources import embedded_br35h


@cache
def real_jpeg() -> bytes:
    """The bytes of one real Br35H JPEG scan."""
    files = sorted((embedded_br35h() / "yes").glob("*.jpg"))
    for f in files:
        data = f.read_bytes()
        if data[:3] == b"\xff\xd8\xff" and len(data) > 10_000:
            return data
    raise AssertionError("no real JPEG found")


@cache
def real_scan() -> Image.Image:
    """A real scan as a grayscale PIL image."""
    return Image.open(io.BytesIO(real_jpeg())).convert("L")


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def bomb() -> bytes:
    """A tiny PNG that decodes to 60 million pixels."""
    return encode(Image.new("1", (10_000, 6_000)), "PNG")


def oversize() -> bytes:
    """A valid JPEG header followed by 9 MiB: over the 8 MiB upload limit."""
    return real_jpeg() + np.random.default_rng(0).bytes(9 * 2**20)


#: name -> () -> (body, expected HTTP status, words the message must contain)
BAD_INPUTS: dict[str, Callable[[], tuple[bytes, int, list[str]]]] = {
    "empty": lambda: (b"", 400, ["empty"]),
    "not_an_image": lambda: (b"GIF89 this is plain text, not an image" * 10, 400, ["not an image"]),
    "truncated_jpeg": lambda: (real_jpeg()[: len(real_jpeg()) // 2], 400, ["truncated"]),
    "decompression_bomb": lambda: (bomb(), 400, ["too large"]),
    "over_size_limit": lambda: (oversize(), 413, ["too large", "limit"]),
    "unsupported_format": lambda: (encode(real_scan(), "PPM"), 400, ["unsupported", "ppm"]),
}


def sixteen_bit() -> bytes:
    array = np.asarray(real_scan(), dtype=np.uint16) * 257
    return encode(Image.fromarray(array, mode="I;16"), "PNG")


def animated() -> bytes:
    frames = [real_scan().convert("P"), real_scan().transpose(Image.Transpose.FLIP_LEFT_RIGHT).convert("P")]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


#: name -> () -> body that must be served (decodes to a sane image)
ODD_BUT_VALID: dict[str, Callable[[], bytes]] = {
    "16_bit_png": sixteen_bit,
    "rgba_png": lambda: encode(real_scan().convert("RGBA"), "PNG"),
    "palette_png": lambda: encode(real_scan().convert("P"), "PNG"),
    "cmyk_jpeg": lambda: encode(real_scan().convert("CMYK"), "JPEG"),
    "animated_gif": animated,
}


def tinted(fmt: str = "PNG") -> bytes:
    """The real scan in false colour (red kept, green and blue halved): a colour image of a brain."""
    grey = real_scan()
    half = grey.point(lambda v: v // 2)
    return encode(Image.merge("RGB", (grey, half, half)), fmt)
