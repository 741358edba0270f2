"""Run directories: the one module that names, finds and orders them (no torch, no Lightning).

A training run lives in ``<root>/version_<N>/`` (:mod:`lightning_app.cli` chooses it)::

    version_<N>/config.yaml, metrics.json, confusion_matrix.png
    version_<N>/checkpoints/best-<epoch>-<metric>.ckpt, last.ckpt

One ordering everywhere: a new run takes the version one above the highest under its
root; "the newest" run or checkpoint is the most recently *written* one (so a resumed
``version_0`` is newer than an untouched ``version_1``). Searches look at any depth
below ``root`` (``runs/default/version_3/...`` is found from ``runs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from lightning_app.errors import UserError

PREFIX = "version_"
CHECKPOINTS = "checkpoints"
BEST_GLOB = "best-*.ckpt"
LAST = "last.ckpt"
Kind = Literal["best", "last"]


class NoCheckpointError(UserError):
    """No checkpoint of the wanted kind where the user pointed."""


def version(path: Path) -> int | None:
    """``N`` of a ``version_<N>`` directory name, else ``None``."""
    suffix = path.name.removeprefix(PREFIX)
    return int(suffix) if path.name.startswith(PREFIX) and suffix.isdigit() else None


def run_dirs(root: Path) -> list[Path]:
    """The ``version_<N>`` directories directly under ``root``, by ascending ``N``."""
    found = [p for p in root.glob(f"{PREFIX}*") if p.is_dir() and version(p) is not None]
    return sorted(found, key=lambda p: version(p) or 0)


def next_run_dir(root: Path) -> Path:
    """``root/version_<N>`` with ``N`` one above the highest existing version."""
    versions = [version(p) or 0 for p in run_dirs(root)]
    return root / f"{PREFIX}{max(versions, default=-1) + 1}"


def newest_run(root: Path, *, having: str = "metrics.json") -> Path | None:
    """The run directly under ``root`` whose ``having`` file was written last (``None``: no such run)."""
    found = [p / having for p in run_dirs(root) if (p / having).is_file()]
    return max(found, key=lambda p: (p.stat().st_mtime, str(p))).parent if found else None


def _pattern(kind: Kind) -> str:
    return BEST_GLOB if kind == "best" else LAST


def checkpoints(root: Path, kind: Kind = "best") -> list[Path]:
    """Every ``best-*.ckpt`` (or ``last.ckpt``) of the runs at any depth below ``root``.

    ``root`` may itself be a run directory. Oldest first, by modification time.
    """
    pattern = f"{CHECKPOINTS}/{_pattern(kind)}"
    found = {*root.glob(pattern), *root.rglob(f"{PREFIX}*/{pattern}")}
    return sorted(found, key=lambda p: (p.stat().st_mtime, str(p)))


def newest_checkpoint(root: Path, kind: Kind = "best") -> Path:
    """The most recently written checkpoint of ``kind`` under ``root``; one-line error if none."""
    found = checkpoints(root, kind)
    if not found:
        hint = "train a model first (make fit) or pass CKPT=" if kind == "best" else "nothing to resume"
        raise NoCheckpointError(f"no {_pattern(kind)} under {root}/: {hint}")
    return found[-1]


def best_checkpoint(run_dir: Path) -> Path:
    """The best checkpoint of one run (the newest ``best-*.ckpt`` if a resume wrote several)."""
    found = sorted((run_dir / CHECKPOINTS).glob(BEST_GLOB), key=lambda p: (p.stat().st_mtime, str(p)))
    if not found:
        raise NoCheckpointError(f"no {BEST_GLOB} in {run_dir / CHECKPOINTS}")
    return found[-1]


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run directory a checkpoint belongs to (``.../version_N/checkpoints/x.ckpt``), if any."""
    parent = checkpoint.parent
    return parent.parent if parent.name == CHECKPOINTS else None
