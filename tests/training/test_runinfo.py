"""Provenance recorded with every run: git commit and data version; the W&B mode."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from lightning_app.data.versioning import folder_hash
from lightning_app.training.runinfo import data_version, git_commit, wandb_mode
from tests.conftest import REPO, copy_subset

COMMIT = re.compile(r"^[0-9a-f]{40}(\+dirty)?$")


def test_git_commit_names_this_checkout() -> None:
    """Fails on ``unknown``: in CI's container the checkout must be marked safe for git."""
    commit = git_commit(REPO, env={})
    assert COMMIT.match(commit), commit
    assert git_commit(Path("/"), env={}) == "unknown"


def test_without_git_the_commit_comes_from_the_image_build_arg() -> None:
    """An image has no .git: the GIT_COMMIT build arg (ENV) names the commit."""
    built = "0123456789abcdef0123456789abcdef01234567"
    assert git_commit(Path("/"), env={"GIT_COMMIT": built}) == built
    assert git_commit(Path("/"), env={"GIT_COMMIT": " "}) == "unknown"
    # a checkout wins over the variable: the code on disk is what runs
    assert git_commit(REPO, env={"GIT_COMMIT": built}).split("+")[0] != built


@pytest.mark.parametrize(
    ("env", "mode"),
    [
        ({}, "offline"),
        ({"WANDB_API_KEY": "k"}, "online"),
        ({"WANDB_API_KEY": "k", "WANDB_MODE": ""}, "online"),
        ({"WANDB_API_KEY": "k", "WANDB_MODE": "offline"}, "offline"),
        ({"WANDB_MODE": "disabled"}, "disabled"),
        ({"WANDB_API_KEY": " "}, "offline"),
    ],
)
def test_wandb_goes_online_with_a_key_unless_the_mode_is_set(env: dict[str, str], mode: str) -> None:
    assert wandb_mode(env) == mode


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
