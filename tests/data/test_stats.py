"""Data statistics and the diff against a base version (data.yml's job summary), on real Br35H scans.

A base root of 100 real scans per class is prepared; the head copy loses two scans, gains
scans the base never had, and has one scan's bytes replaced by another real scan, then is
prepared again with the base's splits kept (as ``make data`` does).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from lightning_app.data import manifest
from lightning_app.data.__main__ import main as data_cli
from lightning_app.data.sources import embedded_br35h
from lightning_app.data.stats import collect, diff, diff_markdown, report
from lightning_app.data.validate import prepare
from tests.conftest import copy_subset


@pytest.fixture(scope="module")
def versions(
    small_br35h: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, dict[str, str]]:
    head = tmp_path_factory.mktemp("head") / "data"
    shutil.copytree(small_br35h, head)
    rows = manifest.read(manifest.path_of(head))
    removed = [rows[0].path, rows[-1].path]
    for path in removed:
        (head / path).unlink()
    changed = rows[5].path
    label_dir = Path(changed).parent.name
    donor = sorted((embedded_br35h() / label_dir).iterdir())[700]  # a scan the base never had
    shutil.copy2(donor, head / changed)  # same path, other (real) bytes of the same class
    copy_subset(head, 3, offset=400)  # more scans the base never had
    assert prepare(head, seed=0, keep_existing=True).ok
    return small_br35h, head, {"removed": " ".join(removed), "changed": changed}


def test_statistics_count_every_listed_scan_by_class_split_and_format(small_br35h: Path) -> None:
    rows = manifest.read(manifest.path_of(small_br35h))
    stats = collect(small_br35h)
    assert sum(sum(c.values()) for c in stats.counts.values()) == len(rows)
    for split in manifest.SPLITS:
        for label in {r.label for r in rows}:
            assert stats.counts[split][label] == sum(1 for r in rows if (r.split, r.label) == (split, label))
        assert stats.groups[split] == len({r.group for r in rows if r.split == split})
    assert sum(stats.formats.values()) == len(rows) and "JPEG" in stats.formats
    assert len(stats.widths) == len(rows) and min(stats.widths) > 32
    assert stats.bytes_on_disk == sum((small_br35h / r.path).stat().st_size for r in rows)
    text = report(small_br35h)
    assert "| **total** | " in text
    assert f"| {sum(1 for r in rows if r.split == 'test')} | {len(rows)} |" in text
    assert "No base manifest to compare with" in text


def test_diff_lists_added_removed_and_changed_scans(versions: tuple[Path, Path, dict[str, str]]) -> None:
    base, head, made = versions
    old, new = manifest.read(manifest.path_of(base)), manifest.read(manifest.path_of(head))
    change = diff(old, new)
    assert change.removed == sorted(made["removed"].split())
    assert change.changed == [made["changed"]]
    assert change.added and all(Path(p).name not in {Path(r.path).name for r in old} for p in change.added)
    assert change.moved == []  # prepare kept the base's splits
    text = report(head, base_manifest=manifest.path_of(base))
    assert f"**removed**: 2: {', '.join(sorted(made['removed'].split()))}" in text
    assert f"**changed bytes**: 1: {made['changed']}" in text
    assert f"**added**: {len(change.added)}: " in text
    total_delta = len(new) - len(old)
    assert "| **total** |" in text and f"| {total_delta:+d} |" in text


def test_a_relabelled_or_moved_test_scan_is_called_out(small_br35h: Path) -> None:
    rows = manifest.read(manifest.path_of(small_br35h))
    test_row = next(r for r in rows if r.split == "test")
    other = next(r for r in rows if r.split == "train")
    edited = [
        dataclasses.replace(r, split="train") if r is test_row
        else dataclasses.replace(r, label="tumor-typo") if r is other else r
        for r in rows
    ]  # fmt: skip
    change = diff(rows, edited)
    assert change.moved == [(test_row.path, "test", "train")]
    assert change.relabelled == [other.path]
    assert not change.empty
    assert diff(rows, rows).empty
    text = "\n".join(diff_markdown(change, rows, edited))
    assert "**1 file(s) moved into or out of the test split**" in text
    assert f"**relabelled**: 1: {other.path}" in text


def test_cli_appends_the_markdown_to_the_summary_file(
    versions: tuple[Path, Path, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, head, _ = versions
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    dvc = tmp_path / "data.dvc"
    dvc.write_text("outs:\n- md5: abc.dir\n  size: 10\n  nfiles: 3\n  path: data\n")
    args = ["stats", "--root", str(head), "--base-manifest", str(manifest.path_of(base))]
    assert data_cli([*args, "--base-dvc", str(dvc), "--head-dvc", str(dvc), "--out", str(summary)]) == 0
    printed = capsys.readouterr().out
    assert summary.read_text() == "# earlier step\n" + printed
    assert "| base | `abc.dir` | 3 | 10 |" in printed
    assert "**changed bytes**: 1" in printed


def test_cli_without_a_manifest_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert data_cli(["stats", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: manifest not found")
