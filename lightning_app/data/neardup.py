"""Near-duplicate groups: 64-bit DCT perceptual hashes (plain and mirrored), connected components.

Br35H holds the same slice re-saved, re-contrasted, resized, lightly cropped -- and mirrored
left-right -- two or three times over. Two images are *near-duplicates* when their perceptual
hashes differ in at most :data:`THRESHOLD` bits, or when one's hash is within
:data:`MIRROR_THRESHOLD` bits of the other's mirror image's hash. Near-duplicate pairs are
joined by union-find, so A~B and B~C put A, B and C in one group even when A and C are further
apart. A split that keeps every group whole cannot leak a near-copy of a test image into
training.

The hash is the classic pHash: the grayscale image resized to 32x32 (Lanczos), its 2-D DCT-II,
the top-left 8x8 low-frequency block compared with its median -> 64 bits (32 of them set, so
distances are even). Both thresholds were chosen by measurement on Br35H (``make
data-evidence``; docs/data.md): the largest at which no group mixes labels.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps

#: Hamming distance (bits of 64) at or below which two images are near-duplicates.
THRESHOLD = 6
#: Distance between one image's hash and the other's *mirrored* hash for a mirrored copy.
MIRROR_THRESHOLD = 4


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


def phashes(gray: Image.Image) -> tuple[int, int]:
    """``(hash, hash of the left-right mirror image)``."""
    return phash(gray), phash(ImageOps.mirror(gray.convert("L")))


def as_array(values: Iterable[int]) -> np.ndarray:
    """Python ints -> a ``uint64`` array for vectorised distances."""
    return np.fromiter((v & 0xFFFFFFFFFFFFFFFF for v in values), dtype=np.uint64)


def pairs_within(
    hashes: Sequence[int],
    threshold: int,
    mirrored: Sequence[int] | None = None,
    mirror_threshold: int = MIRROR_THRESHOLD,
) -> list[tuple[int, int, int]]:
    """Every near-duplicate ``(i, j, distance)`` with ``i < j``.

    Without ``mirrored``: plain distance ``<= threshold``. With it (the mirror images'
    hashes), also pairs whose mirrored distance -- the smaller of ``d(h_i, m_j)`` and
    ``d(m_i, h_j)`` -- is ``<= mirror_threshold``; their distance is reported as negative
    (``-d``) so callers can tell a mirrored copy from a plain one.
    """
    plain = as_array(hashes)
    mirror = as_array(mirrored) if mirrored is not None else None
    found: list[tuple[int, int, int]] = []
    for i in range(len(plain) - 1):
        d = np.bitwise_count(plain[i + 1 :] ^ plain[i]).astype(np.int64)
        hit = d <= threshold
        if mirror is not None:
            dm = np.minimum(
                np.bitwise_count(mirror[i + 1 :] ^ plain[i]), np.bitwise_count(plain[i + 1 :] ^ mirror[i])
            ).astype(np.int64)
            by_mirror = ~hit & (dm <= mirror_threshold)
            d = np.where(by_mirror, -dm, d)
            hit |= by_mirror
        for j in np.flatnonzero(hit):
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


def group(
    hashes: Sequence[int], threshold: int = THRESHOLD, mirrored: Sequence[int] | None = None
) -> list[list[int]]:
    """Indices grouped into near-duplicate connected components (each sorted, in order)."""
    pairs = pairs_within(hashes, threshold, mirrored)
    roots = components(len(hashes), ((i, j) for i, j, _ in pairs))
    groups: dict[int, list[int]] = defaultdict(list)
    for i, root in enumerate(roots):
        groups[root].append(i)
    return list(groups.values())
