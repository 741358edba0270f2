"""Provenance recorded with every run: git commit and data version."""

from __future__ import annotations

import shutil
from pathlib import Path

from lightning_app.data.versioning import folder_hash
from lightning_app.runinfo import data_version, git_commit
from tests.conftest import REPO, copy_subset


def test_git_commit_names_this_checkout() -> None:
    commit = git_commit(REPO)
    assert len(commit.split("+")[0]) == 40
    assert git_commit(Path("/")) == "unknown"


def test_data_version_follows_data_dvc_and_notices_local_changes(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    data = copy_subset(repo / "data" / "br35h", 3)
    shutil.copy2(REPO / ".dvcignore", repo / ".dvcignore")
    md5, _ = folder_hash(repo / "data", repo)
    (repo / "data.dvc").write_text(f"outs:\n- md5: {md5}\n  path: data\n")
    assert data_version(data) == f"dvc:{md5}"
    next((data / "no").iterdir()).write_bytes(b"edited")
    assert data_version(data).startswith("local:")
    assert data_version(data) != f"local:{md5}"


def test_data_version_without_dvc_uses_the_manifest(small_br35h: Path, tmp_path: Path) -> None:
    assert data_version(small_br35h).startswith("manifest:")
    assert data_version(tmp_path) == "unknown"
