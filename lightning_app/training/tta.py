"""A CV run's fold models re-scored out of fold: test-time flips, or the last checkpoint.

For every finished fold of ``runs/cv/<name>/`` the fold's calibrated best checkpoint scores
its own held-out fold (images it never trained or chose a checkpoint on) under each view:
the image as is, and mirrored left-right; the calibrated probabilities are averaged. The
result is written as a CV run of its own, ``runs/cv/<name>-tta/fold_K/version_0/
predictions.csv``, so ``make cv``'s pooling and the paired ``cv_compare`` judge it against
the plain fold models on exactly the same images.

``--checkpoint last`` asks the other question, whether choosing the epoch on the small inner
validation split pays: each fold's ``last.ckpt`` (the end of the schedule), its temperature
fitted on the same inner validation split as the best one's, scores the same held-out fold.

``python -m lightning_app.training.tta runs/cv/default``
``python -m lightning_app.training.tta runs/cv/default --views identity --checkpoint last --out DIR``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from lightning_app.data.atomic import write_text
from lightning_app.data.datamodule import ImageFolderDataModule
from lightning_app.errors import UserError
from lightning_app.models.classifier import Classifier
from lightning_app.training import predictions as pred
from lightning_app.training.calibration import fit_and_store
from lightning_app.training.cv import FOLD_JSON, finished, pool_folds, table
from lightning_app.training.runs import CHECKPOINTS as CHECKPOINT_DIR
from lightning_app.training.runs import best_checkpoint

#: The views averaged: identity and a left-right mirror (the brain's own near-symmetry; the
#: training augmentation flips with p = 0.5, so both views are in-distribution).
VIEWS = ("identity", "hflip")


def _arguments(hparams: dict[str, Any]) -> dict[str, Any]:
    """Saved hyper-parameters as constructor arguments (LightningCLI's ``_class_path``-style keys dropped)."""
    return {k: v for k, v in hparams.items() if not k.startswith("_")}


def _view(images: torch.Tensor, name: str) -> torch.Tensor:
    return images.flip(-1) if name == "hflip" else images


#: Which of a fold's checkpoints scores: ``best`` (chosen on inner validation, calibrated by
#: ``fit``) or ``last`` (the schedule's end; calibrated here on the same inner validation split).
CHECKPOINTS = ("best", "last")


def fold_checkpoint(run_dir: Path, which: str = "best") -> Path:
    """The fold's best checkpoint, or its ``last.ckpt`` (``FileNotFoundError`` naming it if absent)."""
    if which == "best":
        return best_checkpoint(run_dir)
    last = run_dir / CHECKPOINT_DIR / "last.ckpt"
    if not last.is_file():
        raise FileNotFoundError(f"{last}: no last checkpoint (ModelCheckpoint save_last was off)")
    return last


@torch.no_grad()
def fold_tta(run_dir: Path, views: tuple[str, ...] = VIEWS, which: str = "best") -> pred.Predictions:
    """The fold's held-out predictions with one of its checkpoints, probabilities averaged over views."""
    checkpoint = torch.load(fold_checkpoint(run_dir, which), map_location="cpu", weights_only=False)
    data = ImageFolderDataModule(**_arguments(checkpoint["datamodule_hyper_parameters"]))
    data.setup("test")
    # what Classifier.load_from_checkpoint does, on the dict already loaded (one read of the file)
    model = Classifier(**_arguments(checkpoint["hyper_parameters"]))
    model.on_load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    if which == "last":  # uncalibrated (T = 1): fit T on the inner validation split, as fit does
        data.setup("validate")
        fit_and_store(model, data.val_dataloader(), None)
    probs, targets = [], []
    for images, labels in data.test_dataloader():
        probs.append(torch.stack([model.probabilities(model(_view(images, v))) for v in views]).mean(0))
        targets.append(labels)
    base = pred.read(run_dir / pred.FILE)  # paths, groups and class names in the same loader order
    probs_all = torch.cat(probs).double()
    out = pred.Predictions(base.paths, base.groups, torch.cat(targets), probs_all, base.class_names)
    if not torch.equal(out.targets, base.targets):
        raise ValueError(f"{run_dir}: held-out images differ from the fold's predictions.csv")
    return out


def run(
    cv_dir: Path, out_dir: Path, views: tuple[str, ...] = VIEWS, which: str = "best"
) -> dict[str, object]:
    """Score every finished fold of ``cv_dir`` (``views``, checkpoint ``which``) into ``out_dir``; pool."""
    runs, folds = [], []
    for fold_dir in sorted(cv_dir.glob("fold_*")):
        source = finished(fold_dir)
        if source is None:
            continue
        target = out_dir / fold_dir.name / "version_0"
        target.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        pred.write(target / pred.FILE, fold_tta(source, views, which))
        fold = int(fold_dir.name.removeprefix("fold_"))
        info = {
            "fold": fold,
            "seconds": time.perf_counter() - start,
            "tta_of": str(source),
            "checkpoint": which,
        }
        write_text(out_dir / fold_dir.name / FOLD_JSON, json.dumps(info))
        runs.append(target)
        folds.append(fold)
    if not runs:
        raise FileNotFoundError(f"{cv_dir}: no finished fold")
    result = pool_folds(runs, out_dir, fold_ids=folds) | {
        "views": list(views),
        "checkpoint": which,
        "source": str(cv_dir),
    }
    write_text(out_dir / "cv.json", json.dumps(result, indent=2))
    write_text(out_dir / "cv.md", table(result))
    return result


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m lightning_app.training.tta runs/cv/<name> [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv_dir", type=Path)
    parser.add_argument("--out", type=Path, help="default: <cv_dir>-tta")
    parser.add_argument("--views", nargs="+", choices=VIEWS, default=list(VIEWS), help="averaged views")
    parser.add_argument("--checkpoint", choices=CHECKPOINTS, default="best", help="which fold checkpoint")
    args = parser.parse_args(argv)
    try:
        out = args.out or args.cv_dir.with_name(args.cv_dir.name + "-tta")
        result = run(args.cv_dir, out, tuple(args.views), args.checkpoint)
    except (OSError, ValueError, UserError) as exc:
        sys.exit(f"tta: {exc}")
    print(table(result))


if __name__ == "__main__":
    main()
