"""The split manifest: which file is in which split and near-duplicate group, stable and reviewable.

``split.csv`` lives next to the images (and is versioned with them by DVC). The split cannot
leak:

* exact duplicates (same bytes or same decoded pixels) keep one representative;
* near-duplicates (perceptual hash within :data:`neardup.THRESHOLD` bits, or a mirrored copy;
  joined transitively) form a group, and a group is assigned to a split whole;
* a group's split comes from a hash of its stable key (the smallest SHA-256 of its members'
  bytes) and the seed, never from one shuffled list: adding images moves no existing group,
  and with a previous manifest every already-listed file keeps its split (the test set never
  moves);
* in the Kaggle layout ``Testing/`` is the test split, and a ``Training/`` image that
  near-duplicates a ``Testing/`` image is dropped and reported.
"""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lightning_app.data import neardup
from lightning_app.data.atomic import write_atomic
from lightning_app.data.sources import Sample

MANIFEST_NAME = "split.csv"
SPLITS = ("train", "val", "test")
FIELDS = ("path", "label", "split", "sha256", "group")
OLD_FIELDS = ("path", "label", "split", "sha256")


def path_of(root: Path) -> Path:
    """Where the manifest of the data folder ``root`` lives."""
    return Path(root) / MANIFEST_NAME


def has_manifest(root: Path) -> bool:
    """Whether ``root`` holds a manifest file (a prepared data folder; the format is not read)."""
    return path_of(root).is_file()


class OldManifestError(ValueError):
    """A manifest written before near-duplicate groups existed: it must be re-split."""


@dataclass(frozen=True)
class Row:
    """One manifest line."""

    path: str
    label: str
    split: str
    sha256: str
    group: str


@dataclass(frozen=True)
class Dropped:
    """A file left out of the manifest, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class Hashes:
    """What identifies one readable file: bytes, decoded pixels, perceptual hash."""

    sha256: str
    pixels: str
    phash: int
    phash_mirror: int


def group_duplicates(keys: dict[str, tuple[str, ...]]) -> list[list[str]]:
    """Union files sharing any key (bytes hash, pixel hash) into exact-duplicate groups."""
    paths = sorted(keys)
    first_with: dict[str, int] = {}
    edges: list[tuple[int, int]] = []
    for i, path in enumerate(paths):
        for key in keys[path]:
            edges.append((i, first_with.setdefault(key, i)))
    groups: dict[int, list[str]] = defaultdict(list)
    for i, root in enumerate(neardup.components(len(paths), edges)):
        groups[root].append(paths[i])
    return list(groups.values())


def unit_hash(seed: int, key: str) -> float:
    """A uniform number in ``[0, 1)`` from the seed and a group key (stable across runs)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _exact_dedup(
    by_path: dict[str, Sample], hashes: dict[str, Hashes], previous: dict[str, Row]
) -> tuple[list[Sample], list[Dropped]]:
    dropped: list[Dropped] = []
    keep: list[Sample] = []
    keys: dict[str, tuple[str, ...]] = {p: (hashes[p].sha256, hashes[p].pixels) for p in by_path}
    for group in group_duplicates(keys):
        members = [by_path[p] for p in group]
        if len({m.label for m in members}) > 1:
            dropped += [Dropped(m.path, f"duplicate with conflicting labels: {group}") for m in members]
            continue
        rep = min(members, key=lambda m: (m.fixed_split != "test", m.path not in previous, m.path))
        keep.append(rep)
        dropped += [Dropped(m.path, f"exact duplicate of {rep.path}") for m in members if m is not rep]
    return keep, dropped


def _by_fraction(u: float, kaggle: bool, val_fraction: float, test_fraction: float) -> str:
    if kaggle:  # Testing/ is the test split; Training/ gives val and train
        return "val" if u < val_fraction else "train"
    if u < test_fraction:
        return "test"
    return "val" if u < test_fraction + val_fraction else "train"


def split(
    samples: Iterable[Sample],
    hashes: dict[str, Hashes],
    *,
    seed: int = 42,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    threshold: int = neardup.THRESHOLD,
    previous: dict[str, Row] | None = None,
) -> tuple[list[Row], list[Dropped]]:
    """Deduplicate, group near-duplicates and assign whole groups to splits.

    ``hashes`` covers each *readable* file; files absent from it were rejected by validation
    and are skipped. ``previous`` (path -> row of an existing manifest) pins those files'
    splits and group ids: a group holding pinned files goes where they are (the most
    held-out of their splits if a new image bridges two groups; the other pinned members are
    then dropped, so a test image never moves).
    """
    previous = previous or {}
    by_path = {s.path: s for s in samples if s.path in hashes}
    keep, dropped = _exact_dedup(by_path, hashes, previous)
    keep.sort(key=lambda s: s.path)
    kaggle = any(s.fixed_split for s in keep)
    plan: list[tuple[list[Sample], str, str, float]] = []  # members, group id, split, u
    plain, mirrored = [hashes[s.path].phash for s in keep], [hashes[s.path].phash_mirror for s in keep]
    for index in neardup.group(plain, threshold, mirrored):
        members = [keep[i] for i in index]
        key = min(hashes[m.path].sha256 for m in members)
        pinned = {previous[m.path].split for m in members if m.path in previous}
        fixed = {m.fixed_split for m in members if m.fixed_split}
        u = unit_hash(seed, key)
        if "test" in fixed:
            target = "test"
            why = "near-duplicate of a Testing/ image (dropped so it cannot leak into training)"
        elif pinned:
            target = max(pinned, key=SPLITS.index)
            why = f"near-duplicate of files already in the {target} split"
            key = min(r.group for m in members if (r := previous.get(m.path)) and r.split == target)
        else:
            target = _by_fraction(u, kaggle, val_fraction, test_fraction)
            why = ""
        kept: list[Sample] = []
        for m in members:
            moved = m.path in previous and previous[m.path].split != target
            if (target == "test" and fixed and m.fixed_split != "test") or moved:
                dropped.append(Dropped(m.path, why))
            else:
                kept.append(m)
        plan.append((kept, key[:12], target, u))  # a pinned group keeps its old id
    _fill_empty_splits(plan, previous, kaggle)
    rows = [
        Row(m.path, m.label, target, hashes[m.path].sha256, gid)
        for members, gid, target, _ in plan
        for m in members
    ]
    rows.sort(key=lambda r: (SPLITS.index(r.split), r.label, r.path))
    return rows, dropped


def _fill_empty_splits(
    plan: list[tuple[list[Sample], str, str, float]], previous: dict[str, Row], kaggle: bool
) -> None:
    """Tiny data sets only: give a split with no group of some label one group of it.

    The hash assigns each group independently, so with a handful of groups per class a
    split can miss a class. The group moved is an unpinned one from the fullest split
    (train, or val when train lacks the class), chosen by its hash, so the result is still
    deterministic; a split it leaves is never emptied of the class.
    """
    free_splits = ("train", "val") if kaggle else SPLITS
    labels = sorted({m.label for members, *_ in plan for m in members})
    for label in labels:
        for wanted in free_splits:
            if any(sp == wanted and ms and ms[0].label == label for ms, _, sp, _ in plan):
                continue
            source = "val" if wanted == "train" else "train"
            movable = [
                i for i, (ms, _, sp, _) in enumerate(plan)
                if sp == source and ms and ms[0].label == label and not any(m.path in previous for m in ms)
            ]  # fmt: skip
            if len(movable) > 1:
                i = min(movable, key=lambda k: plan[k][3])
                members, gid, _, u = plan[i]
                plan[i] = (members, gid, wanted, u)


def write(rows: list[Row], path: Path) -> None:
    """Write the manifest atomically (a uniquely named temp file renamed into place)."""

    def dump(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(FIELDS)
            writer.writerows((r.path, r.label, r.split, r.sha256, r.group) for r in rows)

    write_atomic(path, dump)


def read(path: Path) -> list[Row]:
    """Read a manifest written by :func:`write`.

    Raises :class:`OldManifestError` for a manifest without group ids (written before the
    leak-free split) and ``ValueError`` for anything else that is not a manifest.
    """
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = tuple(reader.fieldnames or ())
        if fields == OLD_FIELDS:
            raise OldManifestError(f"{path} predates near-duplicate groups: re-split it (make data)")
        if fields != FIELDS:
            raise ValueError(f"{path} is not a split manifest (columns {reader.fieldnames})")
        return [Row(r["path"], r["label"], r["split"], r["sha256"], r["group"]) for r in reader]


def rows_of(rows: Iterable[Row], split: str) -> list[Row]:
    """The rows of one split, in manifest order."""
    return [row for row in rows if row.split == split]


def indices_of(rows: Sequence[Row], split: str) -> list[int]:
    """Positions of one split's rows in ``rows`` (to index tensors built over every row)."""
    return [i for i, row in enumerate(rows) if row.split == split]


def split_rows(root: Path, split: str) -> list[Row]:
    """The rows of one split of the manifest of ``root``, in manifest order."""
    return rows_of(read(path_of(root)), split)
