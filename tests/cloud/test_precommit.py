"""``pre-commit run --all-files`` passes on a copy of the working tree and changes nothing.

It runs on a temporary copy (a fresh git repository holding every file git would
commit, tracked or new), so the real checkout's index is never touched; the copy uses
the project's venv, as the ``repo: local`` hooks expect.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=60
    ).stdout


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("precommit") / "repo"
    files = git(REPO, "ls-files", "--cached", "--others", "--exclude-standard", "-z").split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file() and not src.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / ".venv").symlink_to(REPO / ".venv")
    git(dest, "init", "-q")
    (dest / ".git/info/exclude").write_text("/.venv\n")  # a symlink: .gitignore's ".venv/" misses it
    git(dest, "add", "-A")
    return dest


def run_hooks(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRE_COMMIT_HOME": str(tree.parent / "pre-commit-home"), "SKIP": ""}
    return subprocess.run(
        [str(REPO / ".venv/bin/pre-commit"), "run", *args],
        cwd=tree, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def digests(tree: Path) -> dict[str, str]:
    files = git(tree, "ls-files", "-z").split("\0")
    return {n: hashlib.sha256((tree / n).read_bytes()).hexdigest() for n in files if n}


@pytest.mark.slow
def test_all_hooks_pass_and_change_nothing(tree: Path) -> None:
    before = digests(tree)
    proc = run_hooks(tree, "--all-files")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    for hook in (
        "ruff check",
        "mypy",
        "hadolint",
        "check GitHub workflows",
        "check cloudbuild.yaml",
        "check YAML",
    ):
        assert f"{hook}." in proc.stdout, hook  # the hook ran (a "Skipped" line lacks the dots)
    assert digests(tree) == before


@pytest.mark.slow
def test_hooks_catch_whitespace_bad_yaml_and_a_bad_workflow(tree: Path) -> None:
    bad = tree / "bad"
    bad.mkdir()
    (bad / "notes.txt").write_text("trailing \nno newline at end")
    (bad / "broken.yaml").write_text("key: [unclosed\n")
    workflow = tree / ".github/workflows/extra.yml"
    workflow.write_text("name: x\non: push\njobs:\n  a:\n    steps: []\n")  # no runs-on
    git(tree, "add", "-A")
    try:
        files = ["bad/notes.txt", "bad/broken.yaml", ".github/workflows/extra.yml"]
        proc = run_hooks(tree, "--files", *files)
        assert proc.returncode == 1
        assert "bad/notes.txt:1: trailing whitespace" in proc.stdout
        assert "bad/notes.txt: no newline at end of file" in proc.stdout
        assert "bad/broken.yaml: invalid YAML" in proc.stdout
        assert "extra.yml" in proc.stdout
        assert "check GitHub workflows" in proc.stdout
        assert (bad / "notes.txt").read_text() == "trailing \nno newline at end"  # reported, not rewritten
    finally:
        shutil.rmtree(bad)
        workflow.unlink()
        git(tree, "add", "-A")
