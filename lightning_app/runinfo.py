"""Provenance of a run: git commit and data version (no Lightning, no torch)."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path


def git_commit(cwd: Path | None = None) -> str:
    """The checked-out commit (``+dirty`` when the tree has changes), or ``unknown``."""
    try:

        def git(*args: str) -> str:
            return subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()

        commit = git("rev-parse", "HEAD")
        return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def data_version(data_dir: Path, dvc_file: Path = Path("data.dvc")) -> str:
    """Which data trained a model.

    The DVC hash in ``data.dvc`` when it tracks the data folder (``dvc:<md5>``), else
    the SHA-256 of the split manifest (``manifest:<sha>``), else ``unknown``.
    """
    if dvc_file.is_file():
        text = dvc_file.read_text()
        path = re.search(r"path:\s*(\S+)", text)
        md5 = re.search(r"md5:\s*([0-9a-f]{32}(?:\.dir)?)", text)
        tracked = (dvc_file.parent / path.group(1)).resolve() if path else None
        if md5 and tracked and (tracked == data_dir.resolve() or tracked in data_dir.resolve().parents):
            return f"dvc:{md5.group(1)}"
    split = data_dir / "split.csv"
    if split.is_file():
        return "manifest:" + hashlib.sha256(split.read_bytes()).hexdigest()
    return "unknown"
