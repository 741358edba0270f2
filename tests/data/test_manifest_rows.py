"""``manifest.path_of``/``split_rows``/``rows_of``/``indices_of``: the one way to a split's rows."""

from __future__ import annotations

from pathlib import Path

from lightning_app.data import manifest

ROWS = [
    manifest.Row("yes/a.jpg", "yes", "train", "s1", "g1"),
    manifest.Row("no/b.jpg", "no", "test", "s2", "g2"),
    manifest.Row("yes/c.jpg", "yes", "test", "s3", "g3"),
    manifest.Row("no/d.jpg", "no", "val", "s4", "g4"),
]


def test_split_rows_keep_manifest_order(tmp_path: Path) -> None:
    assert not manifest.has_manifest(tmp_path)
    manifest.write(ROWS, manifest.path_of(tmp_path))
    assert manifest.path_of(tmp_path) == tmp_path / "split.csv" and manifest.has_manifest(tmp_path)
    assert [r.path for r in manifest.split_rows(tmp_path, "test")] == ["no/b.jpg", "yes/c.jpg"]
    assert manifest.split_rows(tmp_path, "val") == [ROWS[3]]


def test_rows_and_indices_of_one_split() -> None:
    assert manifest.rows_of(ROWS, "test") == ROWS[1:3]
    assert manifest.indices_of(ROWS, "test") == [1, 2]
    assert manifest.indices_of(ROWS, "nothing") == [] and manifest.rows_of(ROWS, "nothing") == []
