"""Evidence for the near-duplicate rule: groups per threshold, label mixing, margin pairs.

``make data-evidence`` (``python -m lightning_app.data evidence --root data/br35h``) prints two
Markdown tables -- plain pHash distance 0..12, then plain <= THRESHOLD plus mirrored copies at
0..8 -- with, per threshold: groups, images in multi-image groups, largest group, groups that mix
labels (a different scan matched: the hash is past its useful range) and test images of the
root's current ``split.csv`` with a match in another split. It saves side-by-side PNGs of pairs
at the margins (just inside and just outside each threshold) to look at. Everything is
recomputed from the files.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lightning_app.data import manifest, neardup
from lightning_app.data.sources import discover
from lightning_app.data.validate import inspect_all
from lightning_app.transforms import decode

PER_MARGIN = 6


def _splits(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:  # old or new format: only path and split are needed
        return {r["path"]: r["split"] for r in csv.DictReader(handle)}


def distances(plain: list[int], mirrored: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """All-pairs plain and mirrored Hamming distances (``uint8 [n, n]`` each)."""
    h, m = neardup.as_array(plain), neardup.as_array(mirrored)
    d0 = np.bitwise_count(h[:, None] ^ h[None, :])
    dm = np.bitwise_count(h[:, None] ^ m[None, :])
    return d0, np.minimum(dm, dm.T)


def row(edges: np.ndarray, labels: list[str], paths: list[str], splits: dict[str, str]) -> dict[str, int]:
    """Counts for one rule, given its boolean ``[n, n]`` edge matrix."""
    i_idx, j_idx = np.nonzero(np.triu(edges, 1))
    pairs = list(zip(i_idx.tolist(), j_idx.tolist(), strict=True))
    members: dict[int, list[int]] = defaultdict(list)
    for i, root in enumerate(neardup.components(len(labels), pairs)):
        members[root].append(i)
    leaky: set[int] = set()
    for i, j in pairs:
        si, sj = splits.get(paths[i]), splits.get(paths[j])
        if si and sj and si != sj:
            leaky.update(k for k, s in ((i, si), (j, sj)) if s == "test")
    return {
        "pairs": len(pairs),
        "cross_label_pairs": sum(1 for i, j in pairs if labels[i] != labels[j]),
        "groups": len(members),
        "images_in_multi_groups": sum(len(m) for m in members.values() if len(m) > 1),
        "largest_group": max(len(m) for m in members.values()),
        "label_mixing_groups": sum(1 for m in members.values() if len({labels[i] for i in m}) > 1),
        "test_images_with_match_elsewhere": len(leaky),
    }


def _print_table(title: str, rows: list[dict[str, int]]) -> None:
    keys = list(rows[0])
    print(f"\n{title}\n")
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")


def _pair_image(root: Path, a: str, b: str, caption: str, dest: Path) -> None:
    size = 192
    canvas = Image.new("L", (2 * size + 8, size + 20), 255)
    for k, rel in enumerate((a, b)):
        canvas.paste(decode(root / rel).resize((size, size)), (k * (size + 8), 20))
    ImageDraw.Draw(canvas).text((4, 4), caption, fill=0)
    canvas.save(dest)


def margins(
    root: Path, paths: list[str], labels: list[str], d0: np.ndarray, dm: np.ndarray, out: Path
) -> list[str]:
    """PNGs of pairs that a rule joins only at exactly the margin distance (plain 6/8, mirrored 4/6)."""
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    cases = [("plain", d0, t) for t in (neardup.THRESHOLD, neardup.THRESHOLD + 2)]
    cases += [("mirrored", dm, t) for t in (neardup.MIRROR_THRESHOLD, neardup.MIRROR_THRESHOLD + 2)]
    for kind, d, t in cases:
        others = d0 if kind == "mirrored" else dm
        at = np.argwhere(np.triu((d == t) & (others > neardup.THRESHOLD), 1))
        for i, j in at[:PER_MARGIN].tolist():
            name = f"{kind}-d{t:02d}-{Path(paths[i]).stem}-{Path(paths[j]).stem}.png"
            caption = f"{kind} {t} bits: {paths[i]} ({labels[i]}) vs {paths[j]} ({labels[j]})"
            _pair_image(root, paths[i], paths[j], caption, out / name)
            lines.append(f"{caption} -> {out / name}")
        cross = sum(1 for i, j in at.tolist() if labels[i] != labels[j])
        lines.append(f"{kind} distance {t}: {len(at)} pair(s), {cross} with different labels")
    return lines


def main(root: Path, out: Path, split_csv: Path | None = None) -> int:
    """Print the evidence tables and margin pairs for ``root``; return 0.

    ``split_csv`` (default: the root's own) is the split whose leaks are counted.
    """
    samples = discover(root)
    checks = inspect_all(root, [s.path for s in samples], min_size=1)
    checks = [c for c in checks if c.phash is not None and c.phash_mirror is not None]
    label_of = {s.path: s.label for s in samples}
    paths = [c.path for c in checks]
    labels = [label_of[p] for p in paths]
    d0, dm = distances([int(c.phash or 0) for c in checks], [int(c.phash_mirror or 0) for c in checks])
    splits = _splits(split_csv or manifest.path_of(root))
    print(f"{len(paths)} readable images in {root}; pHash = 64-bit DCT of a 32x32 grayscale thumbnail")
    plain = [{"plain_threshold": t, **row(d0 <= t, labels, paths, splits)} for t in range(0, 13, 2)]
    _print_table("Plain pHash, Hamming distance <= threshold (distances are even):", plain)
    base = d0 <= neardup.THRESHOLD
    mirror = [{"mirror_threshold": t, **row(base | (dm <= t), labels, paths, splits)} for t in range(0, 9, 2)]
    _print_table(f"Plain <= {neardup.THRESHOLD} or mirrored copy <= threshold:", mirror)
    print()
    for line in margins(root, paths, labels, d0, dm, out):
        print(line)
    return 0
