"""Ensembles judged out of fold: several CV runs of the same folds, their probabilities averaged.

Runs of ``make cv`` that differ only in the recipe or the seed hold out exactly the same images
in each fold (the folds follow ``data.seed``, not the training seed). For every fold finished
in all of them, the calibrated out-of-fold probabilities are averaged image by image and
written as a CV run of its own, ``runs/cv/<out>/fold_K/version_0/predictions.csv``, so
``make cv``'s pooling and the paired ``cv_compare`` judge the ensemble against any member on
the same images. No model is loaded: this measures what an ensemble would score before anyone
builds one.

``python -m lightning_app.training.ensemble runs/cv/default runs/cv/seed7 --out runs/cv/ens2``
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from lightning_app.data.atomic import write_text
from lightning_app.training import predictions as pred
from lightning_app.training.cv import finished, pool_folds, table


def average(members: Sequence[pred.Predictions]) -> pred.Predictions:
    """The members' probabilities averaged per image; they must hold the same images and labels."""
    first = members[0]
    for other in members[1:]:
        if other.paths != first.paths or not torch.equal(other.targets, first.targets):
            raise ValueError("ensemble members hold different images: were they run on the same folds?")
        if other.class_names != first.class_names:
            raise ValueError("ensemble members have different classes")
    probs = torch.stack([m.probs for m in members]).mean(0)
    return pred.Predictions(first.paths, first.groups, first.targets, probs, first.class_names)


def run(cv_dirs: Sequence[Path], out_dir: Path) -> dict[str, object]:
    """Average every fold finished in all of ``cv_dirs`` into ``out_dir``; pool and return the result."""
    if len(cv_dirs) < 2:
        raise ValueError("an ensemble needs at least two CV runs")
    runs, folds = [], []
    for fold_dir in sorted(cv_dirs[0].glob("fold_*")):
        sources = [finished(d / fold_dir.name) for d in cv_dirs]
        if any(s is None for s in sources):
            continue
        target = out_dir / fold_dir.name / "version_0"
        target.mkdir(parents=True, exist_ok=True)
        members = [pred.read(s / pred.FILE) for s in sources if s is not None]
        pred.write(target / pred.FILE, average(members))
        runs.append(target)
        folds.append(int(fold_dir.name.removeprefix("fold_")))
    if not runs:
        raise FileNotFoundError(f"no fold is finished in every one of {', '.join(map(str, cv_dirs))}")
    result = pool_folds(runs, out_dir, fold_ids=folds) | {"members": [str(d) for d in cv_dirs]}
    write_text(out_dir / "cv.json", json.dumps(result, indent=2))
    write_text(out_dir / "cv.md", table(result))
    return result


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m lightning_app.training.ensemble runs/cv/<a> runs/cv/<b> ... --out DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv_dirs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        result = run(args.cv_dirs, args.out)
    except (OSError, ValueError) as exc:
        sys.exit(f"ensemble: {exc}")
    print(table(result))


if __name__ == "__main__":
    main()
