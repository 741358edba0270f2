"""Decoded pixels of a prepared root, cached once: shared by the DataModule and the export.

``split_pixels(root, "val", image_size=128)`` gives the ``uint8 [N, 1, S, S]`` images and
label indices of one split, decoded by THE preprocessing (:func:`lightning_app.transforms.load`)
and cached on disk keyed by the manifest's hash, the size and the decoder version. No
Lightning here, so export steps (calibration, parity checks, reference profiles) read
the same pixels the model was trained and tested on.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from lightning_app.data import manifest
from lightning_app.data.atomic import write_atomic
from lightning_app.transforms import DECODER_VERSION, load

DEFAULT_CACHE = Path(".cache/pixels")


def cache_path(root: Path, image_size: int, cache_dir: Path = DEFAULT_CACHE, head_crop: bool = False) -> Path:
    """Where the decoded pixels of ``root`` at ``image_size`` are cached.

    The key covers the manifest (which files, in which order), the size, the head crop and
    the decoder version, so a change to any of them can never train on stale pixels.
    """
    digest = hashlib.sha256(manifest.path_of(root).read_bytes()).hexdigest()[:16]
    crop = "-crop" if head_crop else ""
    return Path(cache_dir) / f"{digest}-{image_size}{crop}-d{DECODER_VERSION}.pt"


def all_pixels(
    root: Path,
    rows: list[manifest.Row],
    *,
    image_size: int,
    cache_dir: Path = DEFAULT_CACHE,
    head_crop: bool = False,
) -> torch.Tensor:
    """Every manifest image decoded and resized once (``uint8 [N, 1, S, S]``), cached on disk."""
    path = cache_path(root, image_size, cache_dir, head_crop)
    if path.is_file():
        cached = torch.load(path, weights_only=True)
        if isinstance(cached, torch.Tensor) and len(cached) == len(rows):
            return cached
    with ThreadPoolExecutor(max_workers=2) as pool:
        decoded = list(
            pool.map(lambda r: load(root / r.path, image_size=image_size, head_crop=head_crop), rows)
        )
    pixels = torch.from_numpy(np.stack(decoded))  # the DataModule's edge: numpy -> tensor
    write_atomic(path, lambda tmp: torch.save(pixels, tmp))  # unique temp name: ranks never race
    return pixels


def split_pixels(
    root: Path,
    split: str,
    *,
    image_size: int,
    labels: list[str] | None = None,
    cache_dir: Path = DEFAULT_CACHE,
    head_crop: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(uint8 [N, 1, S, S], int64 [N])`` of one split; label indices follow sorted folder names."""
    rows = manifest.read(manifest.path_of(root))
    labels = labels or sorted({row.label for row in rows})
    pixels = all_pixels(Path(root), rows, image_size=image_size, cache_dir=cache_dir, head_crop=head_crop)
    index = torch.tensor(manifest.indices_of(rows, split), dtype=torch.long)
    targets = torch.tensor([labels.index(row.label) for row in rows], dtype=torch.long)
    return pixels[index], targets[index]
