"""Run directories: one module names, finds and orders them (lightning_app.training.runs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lightning_app.training import runs


def touch(path: Path, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    os.utime(path, (mtime, mtime))
    return path


def test_versions_are_ordered_by_number_not_by_text(tmp_path: Path) -> None:
    for n in (0, 2, 10, 9):
        (tmp_path / f"version_{n}").mkdir()
    (tmp_path / "version_x").mkdir()
    (tmp_path / "notes").mkdir()
    assert [p.name for p in runs.run_dirs(tmp_path)] == ["version_0", "version_2", "version_9", "version_10"]
    assert runs.next_run_dir(tmp_path) == tmp_path / "version_11"
    assert runs.next_run_dir(tmp_path / "empty") == tmp_path / "empty" / "version_0"


def test_newest_checkpoint_is_the_most_recently_written_at_any_depth(tmp_path: Path) -> None:
    resumed = touch(tmp_path / "default/version_0/checkpoints/best-epoch=07.ckpt", 3_000)
    touch(tmp_path / "default/version_1/checkpoints/best-epoch=01.ckpt", 2_000)
    touch(tmp_path / "smoke/version_5/checkpoints/last.ckpt", 1_000)
    touch(tmp_path / "default/version_1/checkpoints/last.ckpt", 2_500)
    assert runs.newest_checkpoint(tmp_path, "best") == resumed
    assert runs.newest_checkpoint(tmp_path, "last") == tmp_path / "default/version_1/checkpoints/last.ckpt"
    assert runs.newest_checkpoint(tmp_path / "smoke/version_5", "last").parent.parent.name == "version_5"
    assert runs.run_dir_of(resumed) == tmp_path / "default/version_0"
    assert runs.run_dir_of(tmp_path / "model.ckpt") is None


def test_best_checkpoint_of_a_run_and_one_line_errors(tmp_path: Path) -> None:
    run = tmp_path / "version_0"
    old = touch(run / "checkpoints/best-epoch=02.ckpt", 1_000)
    new = touch(run / "checkpoints/best-epoch=05.ckpt", 2_000)
    assert runs.best_checkpoint(run) == new != old
    with pytest.raises(runs.NoCheckpointError, match=r"no best-\*\.ckpt in .*version_9/checkpoints"):
        runs.best_checkpoint(tmp_path / "version_9")
    with pytest.raises(runs.NoCheckpointError, match=r"no last\.ckpt under") as info:
        runs.newest_checkpoint(tmp_path / "none", "last")
    assert "\n" not in str(info.value)


def test_no_other_module_globs_run_directories() -> None:
    """The CLI, the Vertex entrypoint, the export and the benchmarks all ask lightning_app.training.runs."""
    from tests.conftest import REPO

    offenders = [
        str(p.relative_to(REPO))
        for folder in ("lightning_app", "benchmarks")
        for p in (REPO / folder).rglob("*.py")
        if p.name != "runs.py" and ('glob("version_' in p.read_text() or 'glob("best-' in p.read_text())
    ]
    assert offenders == []


def test_newest_run_with_a_file_is_the_one_written_last(tmp_path: Path) -> None:
    touch(tmp_path / "version_10/metrics.json", 1_000)
    touch(tmp_path / "version_2/metrics.json", 2_000)
    (tmp_path / "version_11").mkdir()  # no metrics yet
    assert runs.newest_run(tmp_path) == tmp_path / "version_2"
    assert runs.newest_run(tmp_path, having="config.yaml") is None
