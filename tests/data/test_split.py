"""The leak-free split on real Br35H scans: near-duplicate groups, stability, Kaggle, validate-data."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from lightning_app.data import manifest, neardup
from lightning_app.data.__main__ import main as data_cli
from lightning_app.data.sources import embedded_br35h
from lightning_app.data.validate import prepare, validate
from lightning_app.transforms import decode
from tests.conftest import REPO, copy_subset
from tests.data.test_prepare import kaggle_tree

#: The same tumour scan saved twice at different crops (204x251 and 205x243 px, other bytes).
KNOWN_PAIR = ("yes/y1032.jpg", "yes/y1046.jpg")


def by_path(root: Path) -> dict[str, manifest.Row]:
    return {r.path: r for r in manifest.read(root / manifest.MANIFEST_NAME)}


def hamming(a: Image.Image, b: Image.Image) -> int:
    return bin(neardup.phash(a) ^ neardup.phash(b)).count("1")


def test_a_known_real_near_duplicate_pair_stays_together_whatever_the_seed(tmp_path: Path) -> None:
    src = embedded_br35h()
    a, b = (src / p for p in KNOWN_PAIR)
    assert a.read_bytes() != b.read_bytes() and Image.open(a).size != Image.open(b).size
    assert hamming(decode(a), decode(b)) <= neardup.THRESHOLD
    root = copy_subset(tmp_path / "r", 30)
    for rel in KNOWN_PAIR:
        shutil.copy2(src / rel, root / rel)
    for seed in range(6):
        report = prepare(root, seed=seed)
        assert report.ok, report.problems
        rows = by_path(root)
        first, second = rows[KNOWN_PAIR[0]], rows[KNOWN_PAIR[1]]  # both kept: not exact copies
        assert first.group == second.group and first.split == second.split
        assert report.near_duplicates["leaks"] == {"train": 0, "val": 0, "test": 0}


#: The same scan mirrored left-right (plain pHash 30 bits apart, mirrored 0): Br35H has hundreds.
MIRRORED_PAIR = ("no/no1136.jpg", "no/no887.jpg")


def test_a_real_mirrored_copy_is_grouped_with_its_original(tmp_path: Path) -> None:
    src = embedded_br35h()
    a, b = (decode(src / p) for p in MIRRORED_PAIR)
    assert hamming(a, b) > 2 * neardup.THRESHOLD  # a plain perceptual hash misses it
    assert hamming(ImageOps.mirror(a), b) <= neardup.MIRROR_THRESHOLD
    root = copy_subset(tmp_path / "r", 30)
    for rel in MIRRORED_PAIR:
        shutil.copy2(src / rel, root / rel)
    for seed in range(4):
        assert prepare(root, seed=seed).ok
        rows = by_path(root)
        assert rows[MIRRORED_PAIR[0]].group == rows[MIRRORED_PAIR[1]].group


def test_a_chain_of_four_forms_one_group_although_its_ends_are_far_apart(tmp_path: Path) -> None:
    scan = decode(embedded_br35h() / KNOWN_PAIR[0])
    chain = [scan.rotate(3 * k, fillcolor=0) for k in range(4)]  # each 3 degrees more than the last
    assert all(hamming(chain[k], chain[k + 1]) <= neardup.THRESHOLD for k in range(3))
    assert hamming(chain[0], chain[3]) > neardup.THRESHOLD  # A and D alone would not be joined
    root = copy_subset(tmp_path / "r", 20)
    for k, image in enumerate(chain):
        image.save(root / "yes" / f"chain{k}.png")
    assert prepare(root).ok
    rows = by_path(root)
    assert len({rows[f"yes/chain{k}.png"].group for k in range(4)}) == 1
    assert len({rows[f"yes/chain{k}.png"].split for k in range(4)}) == 1
    # the same on bare hashes: 0 ~ 1 ~ 2 ~ 3 by 3 flipped bits each, 0 and 3 nine apart
    hashes = [0, 0b111, 0b111111, 0b111111111, (1 << 63) | (1 << 40) | (1 << 20) | 0xFF00]
    assert sorted(map(sorted, neardup.group(hashes, 3))) == [[0, 1, 2, 3], [4]]


def test_adding_twenty_images_leaves_the_existing_test_rows_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_subset(tmp_path / "r", 60)
    assert data_cli(["prepare", "--root", str(root)]) == 0
    before = by_path(root)
    test_before = {p: r for p, r in before.items() if r.split == "test"}
    assert test_before
    extra = copy_subset(tmp_path / "extra", 10, offset=60)  # 20 more real scans, 10 per class
    for f in extra.rglob("*.jpg"):
        shutil.copy2(f, root / f.relative_to(extra))
    capsys.readouterr()
    assert data_cli(["prepare", "--root", str(root)]) == 0
    assert "kept its splits; new files were added" in capsys.readouterr().out
    after = by_path(root)
    assert len(after) == len(before) + 20
    assert {p: after[p] for p in test_before} == test_before  # same split, group, hash: unchanged
    assert all(after[p].split == r.split for p, r in before.items())  # nothing moved at all
    assert validate(root).ok
    # Even a fresh re-split (--force, no manifest to keep) moves no group that gained no new
    # member: a group's split is a hash of its own key, not a position in a shuffled list.
    assert data_cli(["prepare", "--root", str(root), "--force"]) == 0
    fresh = by_path(root)
    touched = {fresh[p].group for p in fresh if p not in before}
    untouched = [p for p in before if fresh[p].group not in touched]
    assert len(untouched) > 0.8 * len(before)
    assert all(fresh[p].split == before[p].split for p in untouched)


def test_kaggle_training_near_copy_of_a_testing_image_is_dropped_and_reported(tmp_path: Path) -> None:
    root = kaggle_tree(tmp_path / "kaggle")
    testing = sorted((root / "Testing" / "glioma").iterdir())[0]
    copy = root / "Training" / "glioma" / "recompressed.jpg"
    decode(testing).resize((200, 200)).save(copy, quality=60)  # other pixels, same scan
    report = prepare(root)
    assert report.ok, report.problems
    rows = by_path(root)
    assert rows[testing.relative_to(root).as_posix()].split == "test"
    assert "Training/glioma/recompressed.jpg" not in rows
    reasons = {d["path"]: d["reason"] for d in report.duplicates_dropped}
    assert "Testing/" in reasons["Training/glioma/recompressed.jpg"]
    assert all(r.path.startswith("Testing/") for r in rows.values() if r.split == "test")
    assert {r.split for r in rows.values()} == {"train", "val", "test"}


def plant_cross_split_copy(root: Path) -> tuple[str, str]:
    """Add a re-encoded copy of a test image to the manifest as a *train* row (a leak)."""
    rows = manifest.read(root / manifest.MANIFEST_NAME)
    victim = next(r for r in rows if r.split == "test")
    planted = Path(victim.path).with_name("planted.png").as_posix()
    decode(root / victim.path).resize((180, 180)).save(root / planted)
    sha = hashlib.sha256((root / planted).read_bytes()).hexdigest()
    rows.append(manifest.Row(planted, victim.label, "train", sha, "planted0000"))
    manifest.write(rows, root / manifest.MANIFEST_NAME)
    return victim.path, planted


def test_validate_data_fails_naming_a_planted_cross_split_near_duplicate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_subset(tmp_path / "r", 30)
    assert prepare(root).ok
    assert validate(root).ok
    victim, planted = plant_cross_split_copy(root)
    capsys.readouterr()
    assert data_cli(["validate", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "cross splits" in err and victim in err and planted in err
    report = validate(root)
    assert report.near_duplicates["leaks"]["test"] == 1 and report.near_duplicates["leaks"]["train"] == 1
    # what a user runs: make validate-data (the venv of this test run, not a new one)
    env_path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    make = ["make", "-o", "env", "validate-data", "RUN=env", f"DATA={root}"]
    result = subprocess.run(
        make, cwd=REPO, capture_output=True, text=True, env={"PATH": env_path}, timeout=120
    )
    assert result.returncode != 0
    assert planted in result.stderr


def test_an_old_format_manifest_is_re_split_and_unique_temp_names_are_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_subset(tmp_path / "r", 20)
    with (root / "split.csv").open("w", newline="") as handle:  # the pre-group format
        writer = csv.writer(handle)
        writer.writerow(manifest.OLD_FIELDS)
        writer.writerow(["no/x.jpg", "no", "train", "0" * 64])
    with pytest.raises(manifest.OldManifestError):
        manifest.read(root / "split.csv")
    assert data_cli(["prepare", "--root", str(root)]) == 0
    assert "old format" in capsys.readouterr().out
    assert manifest.read(root / "split.csv")[0].group
    assert not list(root.glob("*partial*")) and not list(root.glob(".*partial*"))


def test_evidence_tables_count_groups_label_mixing_and_save_margin_pairs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = embedded_br35h()
    root = copy_subset(tmp_path / "r", 15)
    for rel in (*KNOWN_PAIR, *MIRRORED_PAIR):
        shutil.copy2(src / rel, root / rel)
    assert prepare(root).ok
    assert data_cli(["evidence", "--root", str(root), "--out", str(tmp_path / "pairs")]) == 0
    out = capsys.readouterr().out
    assert "| plain_threshold | pairs | cross_label_pairs | groups |" in out
    assert "| mirror_threshold |" in out
    plain_part, mirror_part = out.split("| mirror_threshold |")

    def groups_at(text: str) -> dict[int, int]:  # threshold -> number of groups
        rows = [ln.split("|") for ln in text.splitlines() if ln.startswith("| ")]
        return {int(r[1]): int(r[4]) for r in rows if r[1].strip().isdigit()}

    plain, mirror = groups_at(plain_part), groups_at(mirror_part)
    groups = {(0, t): g for t, g in plain.items()} | {(1, t): g for t, g in mirror.items()}
    n = 2 * 15 + 4
    assert groups[0, 0] <= n and groups[0, 6] < n  # the known pair joins at plain <= 6
    assert groups[1, 0] < groups[0, 6]  # the mirrored pair joins only through the mirror
    assert "test_images_with_match_elsewhere" in out and "mirrored distance 4" in out
    assert list((tmp_path / "pairs").glob("*.png"))
