"""Discovery, deduplicated stratified splits, validation reports -- on real Br35H files."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from lightning_app.data import manifest
from lightning_app.data.__main__ import main as data_cli
from lightning_app.data.sources import DataError, discover, embedded_br35h, materialise
from lightning_app.data.validate import REPORT_NAME, prepare, validate
from tests.conftest import copy_subset


def kaggle_tree(
    root: Path, classes: tuple[str, ...] = ("glioma", "meningioma", "notumor", "pituitary")
) -> Path:
    """A 4-class Kaggle-layout tree (Training/ + Testing/) built from real scans."""
    source = sorted((embedded_br35h() / "yes").iterdir())
    for i, name in enumerate(classes):
        for split, count in (("Training", 12), ("Testing", 4)):
            folder = root / split / name
            folder.mkdir(parents=True)
            start = i * 16 + (0 if split == "Training" else 12)
            for f in source[start : start + count]:
                shutil.copy2(f, folder / f.name)
    return root


def test_embedded_set_has_both_classes_and_known_duplicate(tmp_path: Path) -> None:
    root = embedded_br35h()
    assert {p.name for p in root.iterdir() if p.is_dir()} == {"no", "yes"}
    assert (root / "no/no355.jpg").read_bytes() == (root / "no/no532.jpg").read_bytes()


def test_split_is_stratified_deterministic_and_drops_exact_duplicates(tmp_path: Path) -> None:
    root = copy_subset(tmp_path / "a", 40)
    src = embedded_br35h()
    shutil.copy2(src / "no/no355.jpg", root / "no/no355.jpg")
    shutil.copy2(src / "no/no532.jpg", root / "no/no532.jpg")  # same bytes
    Image.open(src / "yes/y0.jpg").save(root / "yes/y0-copy.png")  # same pixels, other bytes
    report = prepare(root, seed=7)
    assert report.ok
    rows = manifest.read(root / "split.csv")
    dropped = {d["path"] for d in report.duplicates_dropped}
    assert dropped == {"no/no532.jpg", "yes/y0.jpg"} or dropped == {"no/no532.jpg", "yes/y0-copy.png"}
    assert not dropped & {r.path for r in rows}
    counts = Counter((r.split, r.label) for r in rows)
    for label in ("no", "yes"):  # every split holds both classes; whole groups, so roughly 15 %
        assert all(1 <= counts[split, label] <= 12 for split in ("val", "test"))
        assert counts["train", label] >= 20
    again = copy_subset(tmp_path / "b", 40)
    for name in ("no355.jpg", "no532.jpg"):
        shutil.copy2(src / "no" / name, again / "no" / name)
    Image.open(src / "yes/y0.jpg").save(again / "yes/y0-copy.png")
    prepare(again, seed=7)
    assert (again / "split.csv").read_bytes() == (root / "split.csv").read_bytes()


def test_conflicting_duplicate_labels_are_dropped(tmp_path: Path) -> None:
    root = copy_subset(tmp_path / "d", 20)
    shutil.copy2(
        root / "yes" / sorted(p.name for p in (root / "yes").iterdir())[0], root / "no" / "mislabelled.jpg"
    )
    report = prepare(root)
    conflicts = [d for d in report.duplicates_dropped if "conflicting" in d["reason"]]
    assert len(conflicts) == 2


def test_bad_files_are_listed_and_skipped(tmp_path: Path) -> None:
    root = copy_subset(tmp_path / "c", 20)
    good = sorted((root / "yes").iterdir())[0].read_bytes()
    (root / "yes/truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "yes/notes.txt").write_text("not an image")
    (root / "no/garbage.jpg").write_bytes(b"\x00" * 100)
    Image.new("L", (8, 8)).save(root / "no/tiny.png")
    report = prepare(root)
    reasons = {r["path"]: r["reason"] for r in report.rejected}
    assert set(reasons) == {"yes/truncated.jpg", "yes/notes.txt", "no/garbage.jpg", "no/tiny.png"}
    assert "unsupported file type" in reasons["yes/notes.txt"]
    assert "too small" in reasons["no/tiny.png"]
    listed = {r.path for r in manifest.read(root / "split.csv")}
    assert not listed & set(reasons)
    saved = json.loads((root / REPORT_NAME).read_text())
    assert saved["ok"] is True and len(saved["rejected"]) == 4


def test_kaggle_layout_keeps_testing_as_test_split(tmp_path: Path) -> None:
    root = kaggle_tree(tmp_path / "kaggle")
    report = prepare(root)
    assert report.ok
    rows = manifest.read(root / "split.csv")
    assert {r.label for r in rows} == {"glioma", "meningioma", "notumor", "pituitary"}
    assert all(r.path.startswith("Testing/") for r in rows if r.split == "test")
    assert all(r.path.startswith("Training/") for r in rows if r.split != "test")
    assert "glioma" in report.table() and "total" in report.table()


def test_missing_class_in_a_split_fails(tmp_path: Path) -> None:
    root = copy_subset(tmp_path / "e", 20)
    for f in sorted((root / "yes").iterdir())[1:]:
        f.unlink()  # one image of 'yes' cannot fill three splits
    report = prepare(root)
    assert not report.ok
    assert any("no images of class yes" in p for p in report.problems)
    assert not (root / "split.csv").exists()


def test_validate_detects_changed_missing_and_cross_split_duplicates(tmp_path: Path) -> None:
    root = copy_subset(tmp_path / "f", 20)
    assert prepare(root).ok
    assert validate(root).ok
    rows = manifest.read(root / "split.csv")
    train = [r for r in rows if r.split == "train"]
    test = [r for r in rows if r.split == "test"]
    shutil.copy2(root / train[0].path, root / test[0].path)  # a train image now also in test
    (root / train[1].path).unlink()
    problems = " | ".join(validate(root).problems)
    assert "changed since the manifest" in problems
    assert "missing" in problems
    assert "more than one split" in problems


@pytest.mark.parametrize(
    ("make_root", "message"),
    [
        (lambda p: p / "nowhere", "data folder not found"),
        (lambda p: p, "no class folders"),
    ],
)
def test_discover_errors_name_the_problem(tmp_path: Path, make_root, message: str) -> None:
    with pytest.raises(DataError, match=message):
        discover(make_root(tmp_path))


def test_empty_class_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match="class folder is empty"):
        discover(tmp_path)


def test_data_cli_prepares_validates_and_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_subset(tmp_path / "g", 20)
    assert data_cli(["prepare", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "total" in out and "report:" in out
    assert data_cli(["validate", "--root", str(root)]) == 0
    assert data_cli(["prepare", "--root", str(root)]) == 0  # existing split is kept and validated
    assert "exists" in capsys.readouterr().out
    assert data_cli(["validate", "--root", str(tmp_path / "missing")]) == 2
    assert "no split manifest" in capsys.readouterr().err


def test_materialise_copies_once_and_atomically(tmp_path: Path) -> None:
    src = copy_subset(tmp_path / "src", 3)
    dest = materialise(src, tmp_path / "dest")
    assert sorted(p.name for p in (dest / "no").iterdir()) == sorted(p.name for p in (src / "no").iterdir())
    (src / "no" / "extra.jpg").write_bytes(b"x")
    materialise(src, dest)
    assert not (dest / "no" / "extra.jpg").exists()
    assert not (tmp_path / "dest.partial").exists()
