"""CV folds: whole groups, stratified, deterministic, the test split never used."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from lightning_app.data import folds
from lightning_app.data.datamodule import ImageFolderDataModule
from lightning_app.data.manifest import Row


def synthetic_rows(n_groups: int = 300, seed: int = 0) -> list[Row]:
    """A manifest-like list: groups of 1-12 images, one label each, ~15 % of groups in test."""
    rng = random.Random(seed)
    rows = []
    for g in range(n_groups):
        label = "yes" if rng.random() < 0.45 else "no"
        split = rng.choices(["train", "val", "test"], weights=[70, 15, 15])[0]
        for i in range(rng.choice([1, 1, 1, 2, 3, 5, 12])):
            rows.append(Row(f"{label}/g{g}_{i}.jpg", label, split, f"sha{g}_{i}", f"group{g:04d}"))
    return rows


def test_every_train_val_group_is_in_exactly_one_fold_and_test_groups_in_none() -> None:
    rows = synthetic_rows()
    assignment = folds.assign_folds(rows, 5, seed=1)
    pool = {r.group for r in rows if r.split in ("train", "val")}
    assert set(assignment) == pool
    assert not {r.group for r in rows if r.split == "test"} & set(assignment)
    assert set(assignment.values()) == set(range(5))


def test_folds_are_stratified_and_balanced_by_images() -> None:
    rows = synthetic_rows(600)
    sizes = folds.fold_sizes(rows, 5, seed=3)
    for label in ("no", "yes"):
        counts = [s[label] for s in sizes]
        assert max(counts) - min(counts) <= 12  # at most one of the largest groups apart
    shares = [s["yes"] / (s["yes"] + s["no"]) for s in sizes]
    assert max(shares) - min(shares) < 0.05


def test_folds_are_deterministic_and_depend_on_the_seed() -> None:
    rows = synthetic_rows()
    assert folds.assign_folds(rows, 5, seed=7) == folds.assign_folds(list(reversed(rows)), 5, seed=7)
    assert folds.assign_folds(rows, 5, seed=7) != folds.assign_folds(rows, 5, seed=8)


@pytest.mark.parametrize("fold", [0, 2, 4])
def test_cv_view_outer_fold_is_test_and_inner_splits_are_grouped(fold: int) -> None:
    rows = synthetic_rows()
    view = folds.cv_view(rows, 5, fold, seed=1)
    assignment = folds.assign_folds(rows, 5, seed=1)
    assert [r.path for r in view] == [r.path for r in rows]  # same order: pixel caches stay valid
    for before, after in zip(rows, view, strict=True):
        if before.split == "test":
            assert after.split == folds.EXCLUDED  # the manifest's test split is never used
        elif assignment[before.group] == fold:
            assert after.split == "test"
        else:
            assert after.split in ("train", "val")
    splits_of = {}
    for r in view:
        splits_of.setdefault(r.group, set()).add(r.split)
    assert all(len(s) == 1 for s in splits_of.values())  # no group in two splits
    counts = Counter((r.split, r.label) for r in view)
    inner = sum(counts[("val", lab)] + counts[("train", lab)] for lab in ("no", "yes"))
    assert 0.10 < (counts[("val", "no")] + counts[("val", "yes")]) / inner < 0.25
    assert counts[("val", "no")] and counts[("val", "yes")]


def test_cv_view_rejects_a_fold_out_of_range() -> None:
    with pytest.raises(ValueError, match="cv_fold"):
        folds.cv_view(synthetic_rows(), 3, 3)
    with pytest.raises(ValueError, match="2 folds"):
        folds.assign_folds(synthetic_rows(), 1)


def test_shuffled_labels_are_per_group_balanced_and_seeded() -> None:
    rows = synthetic_rows(600)
    shuffled = folds.shuffle_labels(rows, seed=1)
    labels_of: dict[str, set[str]] = {}
    for r in shuffled:
        labels_of.setdefault(r.group, set()).add(r.label)
    assert all(len(v) == 1 for v in labels_of.values())  # whole groups keep one label
    before, after = Counter(r.label for r in rows), Counter(r.label for r in shuffled)
    assert abs(before["yes"] - after["yes"]) <= 12  # image balance kept (chance stays put)
    changed = sum(a.label != b.label for a, b in zip(rows, shuffled, strict=True))
    assert 0.3 < changed / len(rows) < 0.7  # unrelated to the true labels
    assert folds.shuffle_labels(rows, seed=1) == shuffled
    assert folds.shuffle_labels(rows, seed=2) != shuffled


def test_datamodule_cv_fold_uses_the_outer_fold_as_test(small_br35h: Path, tmp_path: Path) -> None:
    plain = ImageFolderDataModule(str(small_br35h), image_size=32, cache_dir=str(tmp_path))
    plain.setup()
    held_out = {p.name for p in plain.test_paths()}
    seen: set[str] = set()
    for fold in range(3):
        dm = ImageFolderDataModule(
            str(small_br35h), image_size=32, cache_dir=str(tmp_path), cv_folds=3, cv_fold=fold
        )
        dm.setup()
        test = {p.name for p in dm.test_paths()}
        assert not test & held_out  # the manifest's test split is untouched
        assert not test & seen  # folds are disjoint
        seen |= test
        inner = set(dm.split_groups("train")) | set(dm.split_groups("val"))
        assert not set(dm.split_groups("test")) & inner
        n = {s: len(dm.datasets[s]) for s in ("train", "val", "test")}
        assert sum(n.values()) == 200 - len(held_out)
    assert len(list(tmp_path.glob("*.pt"))) == 1  # one pixel cache for the plain run and every fold
