"""Cross-validation folds over the manifest: stratified, grouped, seeded; the test split untouched.

Cross-validation uses only the **train + val** groups of ``split.csv`` (the test split is never
read for it). Every near-duplicate group goes whole into one fold, folds are balanced per label
by image count, and everything follows from the seed (no global RNG):

* :func:`assign_folds` -- group id -> fold in ``0..k-1``: per label, groups largest first (ties
  broken by a seeded hash) each to the fold holding fewest images of that label so far;
* :func:`cv_view` -- the manifest seen by one CV run: outer fold ``k`` becomes ``"test"`` (the
  out-of-fold predictions), the other folds are split again, grouped and stratified, into inner
  ``"train"`` and ``"val"`` (checkpoint choice and temperature scaling never see fold ``k``); the
  original test rows become :data:`EXCLUDED`. The list keeps the manifest's length and order, so
  pixel caches keyed by the manifest stay valid;
* :func:`shuffle_labels` -- the random-label control: random labels for whole *groups*, image
  counts per label kept, so a model can only score chance unless something leaks.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import replace

from lightning_app.data.manifest import Row, unit_hash

#: The split given to rows a CV run must not use (the original test split).
EXCLUDED = "excluded"
#: Manifest splits that cross-validation draws its folds from.
POOL = ("train", "val")
#: Share of the remaining groups' images held out as the inner validation split.
INNER_VAL_FRACTION = 0.15


def _group_labels(rows: Sequence[Row]) -> tuple[dict[str, str], Counter[str]]:
    """Each group's label (its most common one; Br35H groups never mix) and its image count."""
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        votes[row.group][row.label] += 1
    labels = {g: c.most_common(1)[0][0] for g, c in votes.items()}
    sizes = Counter({g: sum(c.values()) for g, c in votes.items()})
    return labels, sizes


def assign_folds(rows: Sequence[Row], k: int, seed: int = 42) -> dict[str, int]:
    """Group id -> fold index for every train/val group; stratified by label, balanced by images."""
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {k}")
    pool = [r for r in rows if r.split in POOL]
    labels, sizes = _group_labels(pool)
    folds: dict[str, int] = {}
    for label in sorted(set(labels.values())):
        groups = [g for g in labels if labels[g] == label]
        groups.sort(key=lambda g: (-sizes[g], unit_hash(seed, g), g))
        load = [0] * k
        for g in groups:
            fold = min(range(k), key=lambda f: (load[f], unit_hash(seed + f, g)))
            folds[g] = fold
            load[fold] += sizes[g]
    return folds


def inner_val_groups(rows: Sequence[Row], seed: int = 42, fraction: float = INNER_VAL_FRACTION) -> set[str]:
    """Groups of ``rows`` for an inner validation split: per label, about ``fraction`` of its images.

    Groups are taken in seeded-hash order until the label's share is reached, at least one group
    per label when the label has two or more groups (so the inner train split keeps every label).
    """
    labels, sizes = _group_labels(rows)
    chosen: set[str] = set()
    for label in sorted(set(labels.values())):
        groups = sorted((g for g in labels if labels[g] == label), key=lambda g: (unit_hash(seed, g), g))
        total = sum(sizes[g] for g in groups)
        taken = 0
        for g in groups[:-1]:
            if taken >= fraction * total and taken > 0:
                break
            chosen.add(g)
            taken += sizes[g]
    return chosen


def cv_view(
    rows: Sequence[Row], k: int, fold: int, seed: int = 42, val_fraction: float = INNER_VAL_FRACTION
) -> list[Row]:
    """The manifest as one CV run sees it (same length and order; splits rewritten).

    Outer fold ``fold`` -> ``"test"``; the other folds -> inner ``"train"``/``"val"``; the
    manifest's own test rows -> :data:`EXCLUDED`.
    """
    if not 0 <= fold < k:
        raise ValueError(f"cv_fold must be in 0..{k - 1}, got {fold}")
    folds = assign_folds(rows, k, seed)
    rest = [r for r in rows if r.split in POOL and folds[r.group] != fold]
    inner_val = inner_val_groups(rest, seed=seed + 1000 * (fold + 1), fraction=val_fraction)

    def split_of(row: Row) -> str:
        if row.split not in POOL:
            return EXCLUDED
        if folds[row.group] == fold:
            return "test"
        return "val" if row.group in inner_val else "train"

    return [replace(row, split=split_of(row)) for row in rows]


def shuffle_labels(rows: Sequence[Row], seed: int) -> list[Row]:
    """Random labels for whole near-duplicate groups (the random-label control).

    Groups are visited in a seeded random order and each gets the label furthest below its
    original image count, so every group keeps one label, labels are unrelated to the images,
    and the image counts per label stay as in ``rows`` (chance stays at the original balance,
    about 50 % on Br35H; a plain permutation of group labels would not keep it, since group
    sizes range from 1 to over 40). Rows keep their order, paths, splits and groups.
    """
    labels, sizes = _group_labels(rows)
    want = Counter(row.label for row in rows)
    groups = sorted(labels)
    random.Random(seed).shuffle(groups)
    have: Counter[str] = Counter()
    new: dict[str, str] = {}
    for g in groups:
        label = max(sorted(want), key=lambda name: want[name] - have[name])
        new[g] = label
        have[label] += sizes[g]
    return [replace(row, label=new[row.group]) for row in rows]


def fold_sizes(rows: Sequence[Row], k: int, seed: int = 42) -> list[dict[str, int]]:
    """Images per label in each fold (for reports and tests)."""
    folds = assign_folds(rows, k, seed)
    out: list[dict[str, int]] = [{} for _ in range(k)]
    for row in rows:
        if row.split in POOL:
            counts = out[folds[row.group]]
            counts[row.label] = counts.get(row.label, 0) + 1
    return out
