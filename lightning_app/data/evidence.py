"""Evidence for the near-duplicate threshold: groups per Hamming distance, label mixing, margins.

``python -m lightning_app.data evidence --root data/br35h`` prints a Markdown table (one line
per threshold: groups, images in multi-image groups, largest group, label-mixing groups, test
images with a near-copy in train/val under the root's current ``split.csv``) and saves
side-by-side PNGs of pairs at the margin (just inside and just outside the threshold) to look
at. Everything is recomputed from the files; nothing is cached.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageDraw

from lightning_app.data import manifest, neardup
from lightning_app.data.sources import discover
from lightning_app.data.validate import inspect_all
from lightning_app.transforms import decode

MAX_T = 12
PER_DISTANCE = 6


def _splits(root: Path) -> dict[str, str]:
    path = root / manifest.MANIFEST_NAME
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:  # old or new format: only path and split are needed
        return {r["path"]: r["split"] for r in csv.DictReader(handle)}


def table(
    paths: list[str], labels: list[str], hashes: list[int], splits: dict[str, str]
) -> list[dict[str, int]]:
    """One dict per threshold 0..MAX_T with the counts described in the module docstring."""
    pairs = neardup.pairs_within(hashes, MAX_T)
    out = []
    for t in range(MAX_T + 1):
        edges = [(i, j) for i, j, d in pairs if d <= t]
        members: dict[int, list[int]] = defaultdict(list)
        for i, root in enumerate(neardup.components(len(hashes), edges)):
            members[root].append(i)
        multi = [m for m in members.values() if len(m) > 1]
        leaky: set[int] = set()
        for i, j in edges:
            si, sj = splits.get(paths[i]), splits.get(paths[j])
            if si and sj and si != sj:
                leaky.update(k for k, s in ((i, si), (j, sj)) if s == "test")
        out.append(
            {
                "threshold": t,
                "pairs_at": sum(1 for *_, d in pairs if d == t),
                "cross_label_pairs_at": sum(1 for i, j, d in pairs if d == t and labels[i] != labels[j]),
                "groups": len(members),
                "images_in_multi_groups": sum(len(m) for m in multi),
                "largest_group": max(len(m) for m in members.values()),
                "label_mixing_groups": sum(1 for m in members.values() if len({labels[i] for i in m}) > 1),
                "test_images_with_copy_elsewhere": len(leaky),
            }
        )
    return out


def _pair_image(root: Path, a: str, b: str, caption: str, dest: Path) -> None:
    size = 192
    canvas = Image.new("L", (2 * size + 8, size + 20), 255)
    for k, rel in enumerate((a, b)):
        canvas.paste(decode(root / rel).resize((size, size)), (k * (size + 8), 20))
    ImageDraw.Draw(canvas).text((4, 4), caption, fill=0)
    canvas.save(dest)


def margin_pairs(root: Path, paths: list[str], labels: list[str], hashes: list[int], out: Path) -> list[str]:
    """Save PNGs of pairs at distances THRESHOLD-1 .. THRESHOLD+3 not already joined below."""
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for distance in range(neardup.THRESHOLD - 1, neardup.THRESHOLD + 4):
        roots = neardup.components(
            len(hashes), ((i, j) for i, j, d in neardup.pairs_within(hashes, distance - 1))
        )
        at = [(i, j) for i, j, d in neardup.pairs_within(hashes, distance) if d == distance]
        fresh = [(i, j) for i, j in at if roots[i] != roots[j]]  # a new join at this distance
        for i, j in fresh[:PER_DISTANCE]:
            name = f"d{distance:02d}-{Path(paths[i]).stem}-{Path(paths[j]).stem}.png"
            caption = f"{distance} bits: {paths[i]} ({labels[i]}) vs {paths[j]} ({labels[j]})"
            _pair_image(root, paths[i], paths[j], caption, out / name)
            lines.append(f"{caption} -> {out / name}")
        lines.append(f"distance {distance}: {len(fresh)} pair(s) joining two groups, {len(at)} in all")
    return lines


def main(root: Path, out: Path) -> int:
    """Print the evidence table and margin pairs for ``root``; return 0."""
    samples = discover(root)
    checks = [c for c in inspect_all(root, [s.path for s in samples], min_size=1) if c.phash is not None]
    label_of = {s.path: s.label for s in samples}
    paths = [c.path for c in checks]
    hashes = [int(c.phash) for c in checks if c.phash is not None]
    labels = [label_of[p] for p in paths]
    rows = table(paths, labels, hashes, _splits(root))
    keys = list(rows[0])
    print(f"{len(paths)} readable images in {root}; pHash = 64-bit DCT of a 32x32 grayscale thumbnail\n")
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")
    print()
    for line in margin_pairs(root, paths, labels, hashes, out):
        print(line)
    return 0
