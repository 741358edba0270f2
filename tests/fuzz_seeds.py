"""Real scans in every accepted format, and hypothesis strategies that mutate them (fuzz tests).

The seeds are one real Br35H scan encoded as JPEG, PNG, TIFF and WebP (plus 16-bit PNG):
the decoder's real parsers are reached, then the bytes are truncated, flipped, overwritten
in their headers, spliced or padded.
"""

from __future__ import annotations

import io
from functools import cache

from hypothesis import strategies as st
from PIL import Image

from tests.serve.serve_images import real_jpeg, real_scan


@cache
def seeds() -> dict[str, bytes]:
    """One real scan per format (small: decoded in about a millisecond)."""
    scan = real_scan().resize((96, 96))

    def encode(image: Image.Image, fmt: str) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        return buffer.getvalue()

    return {
        "jpeg-original": real_jpeg(),
        "jpeg": encode(scan, "JPEG"),
        "png": encode(scan, "PNG"),
        "png16": encode(scan.convert("I;16"), "PNG"),
        "tiff": encode(scan, "TIFF"),
        "webp": encode(scan, "WEBP"),
    }


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed with up to four mutations: truncation, byte flips, header edits, splices."""
    data = bytearray(seeds()[draw(st.sampled_from(sorted(seeds())))])
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "header", "splice", "pad"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if op == "truncate":
            del data[at:]
        elif op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "header":  # the parsers' sizes, offsets and markers live in the first bytes
            at = draw(st.integers(0, min(len(data), 64) - 1))
            edit = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(edit)] = edit
        elif op == "splice":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        else:
            data += draw(st.sampled_from([b"\x00" * 64, b"\xff" * 64]))
    return bytes(data)
