"""Decode + resize time over the real Br35H size mix: full decode vs THE preprocessing.

``make bench-decode`` times, for every image of the prepared data set (bytes already in
memory, so disk reads are not counted), the two paths to the model's ``uint8 [1, S, S]``:

* **full**: decode at full size, then one antialiased bilinear resize (decoder version 1),
  and
* **reduced early**: :func:`lightning_app.transforms.load` (JPEG DCT scaling to >= 2x the
  target size, integer box reduction for other formats, then the same resize), and
* **served**: the same pixels plus the colour check's chroma (:func:`lightning_app.inference.colour.read`:
  JPEGs drafted to YCbCr, chroma on a <= 64 px thumbnail), what both runtimes run per request.

Each image is timed ``--repeats`` times and its median kept; the table gives p50/p95/max
and the mean over images, plus how far the two paths' pixels differ. The result replaces
the ``bench-decode`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image

from benchmarks.docsection import write_section
from lightning_app.data import manifest
from lightning_app.inference.colour import read
from lightning_app.transforms import DECODER_VERSION, Preprocessing, decode, load


def time_each(images: list[bytes], fn: Callable[[bytes], torch.Tensor], repeats: int) -> list[float]:
    """Median milliseconds of ``fn`` per image."""
    out = []
    for data in images:
        runs = []
        for _ in range(repeats):
            start = time.perf_counter_ns()
            fn(data)
            runs.append((time.perf_counter_ns() - start) / 1e6)
        out.append(statistics.median(runs))
    return out


def summary(ms: list[float]) -> str:
    """``p50 | p95 | max | mean`` in milliseconds."""
    p50, p95 = np.percentile(ms, [50, 95])
    return f"{p50:.2f} | {p95:.2f} | {max(ms):.1f} | {statistics.mean(ms):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/br35h"))
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = [args.data / row.path for row in manifest.read(manifest.path_of(args.data))]
    if args.limit:
        paths = paths[: args.limit]
    images = [p.read_bytes() for p in paths]
    size = args.image_size
    mix: Counter[str] = Counter()
    pixels = []
    for data in images:
        with Image.open(io.BytesIO(data)) as im:
            mix[im.format or "?"] += 1
            pixels.append(im.width * im.height)

    def full(data: bytes) -> torch.Tensor:  # decoder v1: full-size decode, one-step resize
        resized = decode(data).resize((size, size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.array(resized, dtype=np.uint8)).unsqueeze(0)

    def fast(data: bytes) -> torch.Tensor:
        return torch.from_numpy(load(data, image_size=size))

    def served(data: bytes) -> torch.Tensor:
        return torch.from_numpy(read(data, Preprocessing(image_size=size))[0])

    for fn in (full, fast, served):  # warm caches and code paths
        time_each(images[:50], fn, 1)
    full_ms = time_each(images, full, args.repeats)
    fast_ms = time_each(images, fast, args.repeats)
    served_ms = time_each(images, served, args.repeats)
    diff = [(full(d).int() - fast(d).int()).abs().float() for d in images]
    mean_abs = float(torch.stack([d.mean() for d in diff]).mean())
    max_abs = int(max(int(d.max()) for d in diff))
    mpx = np.array(pixels) / 1e6
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"`make bench-decode` — {stamp}, {platform.machine()}, Pillow {PIL.__version__}, 1 thread; "
        f"{len(images)} images of `{args.data}` ({', '.join(f'{k} {v}' for k, v in mix.most_common())}; "
        f"{mpx.min():.2f} to {mpx.max():.2f} Mpx, median {np.median(mpx):.2f}), bytes in memory, "
        f"decode + resize to {size}x{size} `uint8`, median of {args.repeats} runs per image.\n\n"
        "| path | p50 ms | p95 ms | max ms | mean ms |\n|---|---|---|---|---|\n"
        f"| full decode, then resize (decoder v1) | {summary(full_ms)} |\n"
        f"| reduced early (decoder v{DECODER_VERSION}: JPEG DCT scaling / box reduce to >= 2x) "
        f"| {summary(fast_ms)} |\n"
        "| served: reduced early + the colour check's chroma (`inference/colour.read`) "
        f"| {summary(served_ms)} |\n\n"
        f"Speed-up of the mean: {statistics.mean(full_ms) / statistics.mean(fast_ms):.2f}x; the colour "
        f"check adds {statistics.mean(served_ms) - statistics.mean(fast_ms):.2f} ms to the mean. "
        "Pixels of the two "
        f"paths differ by {mean_abs:.2f} grey levels on average (max {max_abs} of 255)."
    )
    print(text)
    if not args.no_doc:
        write_section("bench-decode", text)


if __name__ == "__main__":
    main()
