"""The split manifest: which file is in which split, stable and reviewable.

``split.csv`` lives next to the images (and is versioned with them by DVC). Files are
grouped by exact duplicates -- same bytes or same decoded pixels -- and each group
keeps one representative, so a duplicate can never land in two splits.
"""

from __future__ import annotations

import csv
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lightning_app.data.sources import Sample

MANIFEST_NAME = "split.csv"
SPLITS = ("train", "val", "test")
FIELDS = ("path", "label", "split", "sha256")


@dataclass(frozen=True)
class Row:
    """One manifest line."""

    path: str
    label: str
    split: str
    sha256: str


@dataclass(frozen=True)
class Dropped:
    """A file left out of the manifest, and why."""

    path: str
    reason: str


def group_duplicates(keys: dict[str, tuple[str, ...]]) -> list[list[str]]:
    """Union files sharing any key (bytes hash, pixel hash) into duplicate groups."""
    parent = {path: path for path in keys}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first_with: dict[str, str] = {}
    for path in sorted(keys):
        for key in keys[path]:
            if key in first_with:
                parent[find(path)] = find(first_with[key])
            else:
                first_with[key] = path
    groups: dict[str, list[str]] = defaultdict(list)
    for path in sorted(keys):
        groups[find(path)].append(path)
    return list(groups.values())


def split(
    samples: Iterable[Sample],
    hashes: dict[str, tuple[str, str]],
    *,
    seed: int = 42,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> tuple[list[Row], list[Dropped]]:
    """Deduplicate and assign stratified splits.

    ``hashes`` maps each *readable* file to ``(sha256 of bytes, hash of pixels)``;
    files absent from it were rejected by validation and are skipped. Within a
    duplicate group the representative is the one in a fixed split (the Kaggle
    ``Testing`` folder wins) or else the first path; a group whose copies carry
    different labels is dropped whole.
    """
    by_path = {s.path: s for s in samples if s.path in hashes}
    dropped: list[Dropped] = []
    keep: list[Sample] = []
    for group in group_duplicates({p: hashes[p] for p in by_path}):
        members = [by_path[p] for p in group]
        if len({m.label for m in members}) > 1:
            dropped += [Dropped(m.path, f"duplicate with conflicting labels: {group}") for m in members]
            continue
        rep = min(members, key=lambda m: (m.fixed_split != "test", m.path))
        keep.append(rep)
        dropped += [Dropped(m.path, f"exact duplicate of {rep.path}") for m in members if m is not rep]

    rng = random.Random(seed)
    rows: list[Row] = []
    by_label: dict[str, list[Sample]] = defaultdict(list)
    for sample in sorted(keep, key=lambda s: s.path):
        by_label[sample.label].append(sample)
    for label in sorted(by_label):
        fixed_test = [s for s in by_label[label] if s.fixed_split == "test"]
        free = [s for s in by_label[label] if s.fixed_split != "test"]
        rng.shuffle(free)
        kaggle = any(s.fixed_split for s in by_label[label])
        n_test = 0 if kaggle else round(len(free) * test_fraction)
        n_val = round(len(free) * val_fraction)
        assigned = (
            [(s, "test") for s in fixed_test + free[:n_test]]
            + [(s, "val") for s in free[n_test : n_test + n_val]]
            + [(s, "train") for s in free[n_test + n_val :]]
        )
        rows += [Row(s.path, s.label, sp, hashes[s.path][0]) for s, sp in assigned]
    rows.sort(key=lambda r: (SPLITS.index(r.split), r.label, r.path))
    return rows, dropped


def write(rows: list[Row], path: Path) -> None:
    """Write the manifest atomically (a temp file renamed into place)."""
    tmp = path.with_suffix(".csv.partial")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(FIELDS)
        writer.writerows((r.path, r.label, r.split, r.sha256) for r in rows)
    tmp.replace(path)


def read(path: Path) -> list[Row]:
    """Read a manifest written by :func:`write`."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != FIELDS:
            raise ValueError(f"{path} is not a split manifest (columns {reader.fieldnames})")
        return [Row(r["path"], r["label"], r["split"], r["sha256"]) for r in reader]
