"""Provenance of a run: git commit and data version, and the W&B mode (no Lightning, no torch)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

#: Set by the images (``--build-arg GIT_COMMIT=...``): the commit when there is no ``.git``.
GIT_COMMIT_ENV = "GIT_COMMIT"


def wandb_mode(env: Mapping[str, str]) -> str:
    """``WANDB_MODE`` if set (non-empty), else ``online`` when ``WANDB_API_KEY`` is set, else ``offline``.

    The same rule for ``make fit``, the train image and Vertex AI jobs (where
    :mod:`lightning_app.train_entry` reads the key from Secret Manager first).
    """
    mode = env.get("WANDB_MODE", "").strip()
    if mode:
        return mode
    return "online" if env.get("WANDB_API_KEY", "").strip() else "offline"


def git_commit(cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    """The checked-out commit (``+dirty`` when the tree has changes).

    Without a usable git checkout (an image has no ``.git``), the ``GIT_COMMIT``
    environment variable the image was built with; else ``unknown``.
    """
    env = os.environ if env is None else env
    fallback = env.get(GIT_COMMIT_ENV, "").strip() or "unknown"
    try:

        def git(*args: str) -> str:
            return subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()

        commit = git("rev-parse", "HEAD")
        return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return fallback


def data_version(data_dir: Path) -> str:
    """Which data trained a model.

    ``dvc:<md5>.dir`` when a ``data.dvc`` above ``data_dir`` tracks it and the folder on
    disk still hashes to that version; ``local:<md5>.dir`` when it tracks it but the
    folder differs (local edits, or the embedded fallback while ``data.dvc`` names other
    data); else ``manifest:<sha256 of split.csv>``; else ``unknown``.
    """
    from lightning_app.data import manifest
    from lightning_app.data.versioning import DVC_FILE, folder_hash, tracked

    data_dir = data_dir.resolve()
    repo = next((p for p in [data_dir, *data_dir.parents] if (p / DVC_FILE).is_file()), None)
    found = tracked(repo) if repo else None
    if repo and found:
        folder, md5 = found[0].resolve(), found[1]
        if folder == data_dir or folder in data_dir.parents:
            actual, _ = folder_hash(folder, repo)
            return f"dvc:{md5}" if actual == md5 else f"local:{actual}"
    split = manifest.path_of(data_dir)
    if split.is_file():
        return "manifest:" + hashlib.sha256(split.read_bytes()).hexdigest()
    return "unknown"
