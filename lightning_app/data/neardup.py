"""Near-duplicate groups: a 64-bit DCT perceptual hash, Hamming distance, connected components.

Br35H holds the same slice re-saved, re-contrasted, resized or lightly cropped two or three
times over. Two images whose perceptual hashes differ in at most ``threshold`` bits are
*near-duplicates*; near-duplicate pairs are joined by union-find, so A~B and B~C put A, B and C
in one group even when A and C are further apart. A split that keeps every group whole cannot
leak a near-copy of a test image into training.

The hash is the classic pHash: the grayscale image resized to 32x32 (Lanczos), its 2-D DCT-II,
the top-left 8x8 low-frequency block compared with its median -> 64 bits. The threshold was
chosen by measurement on Br35H (``python -m lightning_app.data evidence``; see docs/data.md).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image

#: Hamming distance (bits of 64) at or below which two images are near-duplicates.
THRESHOLD = 6
#: Bumped when the hash can change, so stored hashes are never compared across versions.
HASH_VERSION = 1


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return np.cos(np.pi * (2 * i + 1) * k / (2 * n))  # unnormalised DCT-II; scale is irrelevant


_DCT32 = _dct_matrix(32)


def phash(gray: Image.Image) -> int:
    """64-bit DCT perceptual hash of a decoded image (any mode; converted to ``L``)."""
    small = np.asarray(gray.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT32 @ small @ _DCT32.T)[:8, :8].ravel()
    bits = low > np.median(low)
    return int(np.packbits(bits).view(">u8")[0])


def distances_to(hashes: np.ndarray, index: int) -> np.ndarray:
    """Hamming distances (``uint8``) from ``hashes[index]`` to every hash."""
    return np.bitwise_count(hashes ^ hashes[index]).astype(np.uint8)


def as_array(values: Iterable[int]) -> np.ndarray:
    """Python ints -> a ``uint64`` array for vectorised distances."""
    return np.fromiter((v & 0xFFFFFFFFFFFFFFFF for v in values), dtype=np.uint64)


def pairs_within(hashes: Sequence[int], threshold: int) -> list[tuple[int, int, int]]:
    """Every ``(i, j, distance)`` with ``i < j`` and distance ``<= threshold``."""
    array = as_array(hashes)
    found: list[tuple[int, int, int]] = []
    for i in range(len(array) - 1):
        d = np.bitwise_count(array[i + 1 :] ^ array[i])
        for j in np.flatnonzero(d <= threshold):
            found.append((i, i + 1 + int(j), int(d[j])))
    return found


def components(n: int, edges: Iterable[tuple[int, int]]) -> list[int]:
    """Union-find: the component id (smallest member index) of each of ``n`` nodes."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(n)]


def group(hashes: Sequence[int], threshold: int = THRESHOLD) -> list[list[int]]:
    """Indices grouped into near-duplicate connected components (each sorted, in order)."""
    roots = components(len(hashes), ((i, j) for i, j, _ in pairs_within(hashes, threshold)))
    groups: dict[int, list[int]] = defaultdict(list)
    for i, root in enumerate(roots):
        groups[root].append(i)
    return list(groups.values())
