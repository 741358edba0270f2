"""Data statistics and the difference between two data versions, as markdown.

The data workflow (``.github/workflows/data.yml``) posts this as the job summary and as a
comment on the pull request that changes ``data.dvc``:

* the statistics of a prepared root: images per class and split, near-duplicate groups,
  file formats, image modes, image sizes and bytes on disk, and how far the labels can be
  read off framing and brightness alone (:mod:`lightning_app.data.cues`);
* the difference against a base version (``main``'s ``split.csv`` and ``data.dvc``):
  files added, removed or changed (same path, other bytes), relabelled, or moved to another
  split (a moved test file means earlier test scores no longer compare), and the count
  changes per class and split.

    python -m lightning_app.data stats --root data/br35h [--base-manifest main-split.csv]
        [--base-dvc main-data.dvc] [--head-dvc data.dvc] [--out summary.md]
"""

from __future__ import annotations

import statistics
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from lightning_app.data import cues, manifest
from lightning_app.data.sources import DataError
from lightning_app.transforms import load

#: At most this many paths are listed per kind of change (the counts are always complete).
LISTED = 20
#: The cues are read at the default recipe's input size.
CUE_SIZE = 128


@dataclass
class Stats:
    """What a prepared data root holds."""

    counts: dict[str, Counter[str]]
    groups: dict[str, int]
    largest_group: int
    formats: Counter[str]
    modes: Counter[str]
    widths: list[int]
    heights: list[int]
    bytes_on_disk: int
    unreadable: list[str] = field(default_factory=list)


@dataclass
class Diff:
    """How a head manifest differs from a base manifest (paths relative to the root)."""

    added: list[str]
    removed: list[str]
    changed: list[str]
    relabelled: list[str]
    moved: list[tuple[str, str, str]]

    @property
    def empty(self) -> bool:
        """True when both manifests list the same files, bytes, labels and splits."""
        return not (self.added or self.removed or self.changed or self.relabelled or self.moved)


def read_manifest(path: Path) -> list[manifest.Row]:
    """The rows of a split manifest; a missing or foreign file is a :class:`DataError`."""
    if not path.is_file():
        raise DataError(f"manifest not found: {path} (run 'make data' first)")
    try:
        return manifest.read(path)
    except ValueError as exc:
        raise DataError(str(exc)) from None


def collect(root: Path) -> Stats:
    """Read the manifest of ``root`` and every listed image's header."""
    rows = read_manifest(manifest.path_of(root))
    counts: dict[str, Counter[str]] = {s: Counter() for s in manifest.SPLITS}
    groups: dict[str, set[str]] = {s: set() for s in manifest.SPLITS}
    sizes: Counter[str] = Counter(row.group for row in rows)
    stats = Stats(counts, {}, max(sizes.values(), default=0), Counter(), Counter(), [], [], 0)
    for row in rows:
        counts.setdefault(row.split, Counter())[row.label] += 1
        groups.setdefault(row.split, set()).add(row.group)
        path = root / row.path
        try:
            with Image.open(path) as image:
                stats.formats[image.format or "?"] += 1
                stats.modes[image.mode] += 1
                stats.widths.append(image.width)
                stats.heights.append(image.height)
            stats.bytes_on_disk += path.stat().st_size
        except (OSError, SyntaxError):  # missing or not an image: validate-data says why
            stats.unreadable.append(row.path)
    stats.groups = {s: len(g) for s, g in groups.items()}
    return stats


def cues_markdown(root: Path, rows: list[manifest.Row]) -> list[str]:
    """The label-free cues section: per class, framing and brightness, and how well each tells it."""

    def read(row: manifest.Row) -> np.ndarray | None:
        try:
            return load(root / row.path, image_size=CUE_SIZE)
        except (OSError, ValueError):  # missing or not an image: listed as unreadable above
            return None

    with ThreadPoolExecutor(max_workers=2) as pool:
        decoded = list(pool.map(read, rows))
    kept = [(row.label, pixels) for row, pixels in zip(rows, decoded, strict=True) if pixels is not None]
    if not kept:
        return ["### Label-free cues", "", "No readable image."]
    return [
        "### Label-free cues",
        "",
        f"Read at {CUE_SIZE} px, as the model sees the scans. AUROC 0.5: the cue tells nothing of the class;",
        "far from 0.5 either way, a model can score in part without looking at any lesion.",
        "",
        *cues.table(np.stack([p for _, p in kept]), [label for label, _ in kept]),
    ]


def diff(base: list[manifest.Row], head: list[manifest.Row]) -> Diff:
    """Files added, removed, changed, relabelled or moved between two manifests."""
    old = {row.path: row for row in base}
    new = {row.path: row for row in head}
    common = sorted(old.keys() & new.keys())
    return Diff(
        added=sorted(new.keys() - old.keys()),
        removed=sorted(old.keys() - new.keys()),
        changed=[p for p in common if old[p].sha256 != new[p].sha256],
        relabelled=[p for p in common if old[p].label != new[p].label],
        moved=[(p, old[p].split, new[p].split) for p in common if old[p].split != new[p].split],
    )


def dvc_out(path: Path) -> dict[str, Any]:
    """The first ``outs`` entry of a ``.dvc`` file (md5, size, nfiles, path)."""
    try:
        outs = yaml.safe_load(path.read_text())["outs"]
        return dict(outs[0])
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError) as exc:
        raise DataError(f"not a .dvc file with outs: {path} ({type(exc).__name__})") from None


def _count_table(
    counts: dict[str, Counter[str]], groups: dict[str, int] | None = None, *, signed: bool = False
) -> list[str]:
    """Images per class (rows) and split (columns), with totals; ``signed`` for differences."""

    def line(name: str, values: list[int], fmt: Any = str) -> str:
        return f"| {name} | " + " | ".join(fmt(v) for v in (*values, sum(values))) + " |"

    fmt = (lambda v: f"{v:+d}") if signed else str
    labels = sorted({label for per in counts.values() for label in per})
    lines = ["| class | " + " | ".join((*manifest.SPLITS, "total")) + " |", "|---" + "|---:" * 4 + "|"]
    for label in labels:
        lines.append(line(label, [counts.get(s, Counter())[label] for s in manifest.SPLITS], fmt))
    lines.append(line("**total**", [sum(counts.get(s, Counter()).values()) for s in manifest.SPLITS], fmt))
    if groups is not None:
        lines.append(line("near-duplicate groups", [groups.get(s, 0) for s in manifest.SPLITS]))
    return lines


def _spread(values: list[int]) -> str:
    if not values:
        return "-"
    return f"{min(values)} / {int(statistics.median(values))} / {max(values)}"


def stats_markdown(stats: Stats) -> list[str]:
    """The statistics section."""

    def mix(counter: Counter[str]) -> str:
        return ", ".join(f"{k} {v}" for k, v in counter.most_common())

    lines = ["### Images per class and split", "", *_count_table(stats.counts, stats.groups), ""]
    lines += [
        f"- largest near-duplicate group: {stats.largest_group} images",
        f"- formats: {mix(stats.formats)}",
        f"- modes: {mix(stats.modes)}",
        f"- width px (min / median / max): {_spread(stats.widths)}; height: {_spread(stats.heights)}",
        f"- on disk: {stats.bytes_on_disk / 2**20:.1f} MiB",
    ]
    if stats.unreadable:
        lines.append(f"- **unreadable**: {len(stats.unreadable)} ({', '.join(stats.unreadable[:LISTED])})")
    return lines


def diff_markdown(change: Diff, base: list[manifest.Row], head: list[manifest.Row]) -> list[str]:
    """The difference section: counts per class and split, then the changed paths."""
    if change.empty:
        return ["Same files, bytes, labels and splits as the base version."]
    delta: dict[str, Counter[str]] = {s: Counter() for s in manifest.SPLITS}
    for sign, rows in ((1, head), (-1, base)):
        for row in rows:
            delta.setdefault(row.split, Counter())[row.label] += sign
    lines = ["Change in images per class and split:", "", *_count_table(delta, signed=True), ""]
    moved = [f"{p} ({a} -> {b})" for p, a, b in change.moved]
    test_moves = sum(1 for _, a, b in change.moved if "test" in (a, b))
    for name, paths in (
        ("added", change.added),
        ("removed", change.removed),
        ("changed bytes", change.changed),
        ("relabelled", change.relabelled),
        ("moved split", moved),
    ):
        if paths:
            more = f", and {len(paths) - LISTED} more" if len(paths) > LISTED else ""
            lines.append(f"- **{name}**: {len(paths)}: {', '.join(paths[:LISTED])}{more}")
    if test_moves:
        moved_test = f"{test_moves} file(s) moved into or out of the test split"
        lines.append(f"- **{moved_test}**: earlier test scores no longer compare")
    return lines


def report(
    root: Path,
    *,
    base_manifest: Path | None = None,
    base_dvc: Path | None = None,
    head_dvc: Path | None = None,
) -> str:
    """The whole markdown report of ``root``, with the diff when a base manifest is given."""
    head = read_manifest(manifest.path_of(root))
    lines = [f"## Data: `{root}`", ""]
    if base_dvc is not None and head_dvc is not None:
        old, new = dvc_out(base_dvc), dvc_out(head_dvc)
        lines += ["| data.dvc | md5 | files | bytes |", "|---|---|---:|---:|"]
        for name, out in (("base", old), ("this version", new)):
            lines.append(f"| {name} | `{out.get('md5')}` | {out.get('nfiles')} | {out.get('size')} |")
        lines.append("")
    lines += [*stats_markdown(collect(root)), "", *cues_markdown(root, head), ""]
    lines += ["### Difference against the base version", ""]
    if base_manifest is None or not base_manifest.is_file():
        lines.append("No base manifest to compare with (no remote access, or the base has no data yet).")
    else:
        base = read_manifest(base_manifest)
        lines += diff_markdown(diff(base, head), base, head)
    return "\n".join(lines) + "\n"
