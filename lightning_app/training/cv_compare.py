"""Paired comparison of two CV arms on the same folds (is lever B better than baseline A).

An arm is one CV run, or several runs of the same recipe at different training seeds
(``runs/cv/default,runs/cv/seed7``). All runs must come from the same fold split (same ``k``
and ``data.seed``), so every out-of-fold image has a prediction from each. Reported, on the
folds every run has finished:

* each run's pooled accuracy (with two or more seeds, the arm's seed spread);
* per fold, the difference in accuracy (B - A, each arm's mean over its seeds) and its mean
  +- SD over folds;
* pooled, the difference in accuracy, AUROC, tumour sensitivity, specificity and ECE (each
  arm's mean over its seeds), with a 95 % percentile interval from a two-stage bootstrap:
  whole near-duplicate groups are resampled (the same groups for A and B, so the pairing
  removes the fold-to-fold spread both share) and, within each arm, its seeds are redrawn with
  replacement. One seed per arm holds no training-seed variance: the interval then covers scan
  sampling only, which a seed control showed to be too narrow (docs/cv_study.md).

``python -m lightning_app.training.cv_compare runs/cv/default,runs/cv/seed7 runs/cv/ema,runs/cv/ema-seed7``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lightning_app.training import evaluation as ev
from lightning_app.training import predictions as pred
from lightning_app.training.cv import finished, headline, positive_class


def fold_predictions(cv_dir: Path) -> dict[int, pred.Predictions]:
    """Finished folds of a CV run: fold index -> its out-of-fold predictions."""
    out = {}
    for fold_dir in sorted(cv_dir.glob("fold_*")):
        run = finished(fold_dir)
        if run is not None:
            out[int(fold_dir.name.removeprefix("fold_"))] = pred.read(run / pred.FILE)
    return out


def _aligned(a: pred.Predictions, b: pred.Predictions) -> pred.Predictions:
    """``b`` re-ordered to ``a``'s images (raises if the two folds hold different images)."""
    if set(a.paths) != set(b.paths):
        raise ValueError("the runs' folds hold different images: not the same fold split")
    index = {p: i for i, p in enumerate(b.paths)}
    order = torch.tensor([index[p] for p in a.paths])
    return pred.Predictions(a.paths, a.groups, b.targets[order], b.probs[order], a.class_names)


class _ArmMeans:
    """Bootstrap statistic over ``[N, C * runs]`` probabilities: lever-arm mean minus base-arm mean.

    :meth:`point` averages every run of each arm. Each call (one group resample) also redraws
    each arm's runs with replacement, so seed variance widens the interval. A separate
    generator keeps the group draws those of a one-seed comparison.
    """

    def __init__(self, n_classes: int, n_base: int, n_lever: int, positive: int, seed: int) -> None:
        self.n_classes, self.n_base, self.n_lever, self.positive = n_classes, n_base, n_lever, positive
        self.generator = torch.Generator().manual_seed(seed + 1)

    def _difference(self, probs: torch.Tensor, targets: torch.Tensor, redraw: bool) -> dict[str, float]:
        c = self.n_classes
        arms = []
        for offset, n in ((0, self.n_base), (self.n_base, self.n_lever)):
            picks = torch.randint(n, (n,), generator=self.generator).tolist() if redraw else range(n)
            runs = [
                headline(
                    ev.summary(probs[:, (offset + i) * c : (offset + i + 1) * c], targets), self.positive
                )
                for i in picks
            ]
            arms.append({k: statistics.fmean(r[k] for r in runs) for k in runs[0]})
        return {k: arms[1][k] - arms[0][k] for k in arms[0]}

    def point(self, probs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """The difference of the arms' means over all their runs."""
        return self._difference(probs, targets, redraw=False)

    def __call__(self, probs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        return self._difference(probs, targets, redraw=True)


def _accuracy(p: pred.Predictions) -> float:
    return float((p.probs.argmax(1) == p.targets).double().mean())


def compare(
    base_dirs: Path | Sequence[Path],
    lever_dirs: Path | Sequence[Path],
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired differences (lever arm - base arm) per common fold and pooled, with bootstrap CIs."""
    base_dirs = [base_dirs] if isinstance(base_dirs, Path) else list(base_dirs)
    lever_dirs = [lever_dirs] if isinstance(lever_dirs, Path) else list(lever_dirs)
    runs = [fold_predictions(d) for d in (*base_dirs, *lever_dirs)]
    common = sorted(set.intersection(*(set(r) for r in runs)))
    if not common:
        names = ", ".join(map(str, (*base_dirs, *lever_dirs)))
        raise ValueError(f"no finished fold in common between {names}")
    # per run: its folds, aligned to the first base run's image order, then pooled
    folds = [[_aligned(runs[0][f], r[f]) for f in common] for r in runs]
    pooled = [pred.pool(f) for f in folds]
    n_base = len(base_dirs)
    positive = positive_class(pooled[0].class_names)
    per_fold = []
    for i, fold in enumerate(common):
        base = statistics.fmean(_accuracy(folds[r][i]) for r in range(n_base))
        lever = statistics.fmean(_accuracy(folds[r][i]) for r in range(n_base, len(runs)))
        per_fold.append({"fold": fold, "base": base, "lever": lever, "diff": lever - base})
    statistic = _ArmMeans(pooled[0].probs.shape[1], n_base, len(lever_dirs), positive, seed)
    both = torch.cat([p.probs for p in pooled], dim=1)  # one tensor, so all runs are resampled alike
    targets = pooled[0].targets
    cis = ev.bootstrap(
        both,
        targets,
        pooled[0].groups,
        statistic=statistic,
        n_resamples=resamples,
        seed=seed,
        point=statistic.point(both, targets),
    )
    diffs = [f["diff"] for f in per_fold]
    return {
        "base": [str(d) for d in base_dirs],
        "lever": [str(d) for d in lever_dirs],
        "run_accuracy": {
            str(d): _accuracy(p) for d, p in zip((*base_dirs, *lever_dirs), pooled, strict=True)
        },
        "folds": common,
        "per_fold": per_fold,
        "fold_diff_mean": statistics.fmean(diffs),
        "fold_diff_sd": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
        "pooled_diff": cis,
        "seeds_resampled": n_base > 1 or len(lever_dirs) > 1,
        "n_images": len(pooled[0]),
        "n_groups": len(set(pooled[0].groups)),
    }


def describe(result: dict[str, Any]) -> str:
    """A few lines: each run's accuracy, per-fold differences, then the pooled paired differences."""
    folds, n, groups = result["folds"], result["n_images"], result["n_groups"]
    base, lever = " + ".join(result["base"]), " + ".join(result["lever"])
    lines = [f"{lever} - {base} on folds {folds} ({n} images, {groups} groups)"]
    for run, acc in result["run_accuracy"].items():
        lines.append(f"  {run}: pooled accuracy {acc * 100:.1f}")
    for f in result["per_fold"]:
        b, lv, delta = f["base"] * 100, f["lever"] * 100, f["diff"] * 100
        lines.append(f"  fold {f['fold']}: accuracy {b:.1f} -> {lv:.1f} ({delta:+.1f} points)")
    mean, sd = result["fold_diff_mean"] * 100, result["fold_diff_sd"] * 100
    lines.append(f"  per-fold accuracy difference: {mean:+.1f} +- {sd:.1f} points")
    what = "groups and seeds resampled" if result["seeds_resampled"] else "groups resampled; one seed each"
    for key, ci in result["pooled_diff"].items():
        scale, unit = (100, " points") if key in ("accuracy", "sensitivity", "specificity") else (1, "")
        value, low, high = (ci[k] * scale for k in ("value", "low", "high"))
        lines.append(f"  pooled {key}: {value:+.3g}{unit} (95 % CI {low:+.3g} to {high:+.3g}; {what})")
    return "\n".join(lines)


def _arm(text: str) -> list[Path]:
    return [Path(p) for p in text.split(",") if p]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Compare two arms; print the summary and write ``compare_<base>.json`` in the lever's first run."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_app.training.cv_compare", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "base", type=_arm, help="the baseline's runs/cv/NAME[,runs/cv/NAME2 at another seed ...]"
    )
    parser.add_argument("lever", type=_arm, help="the lever's runs/cv/NAME[,...]")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args(argv)
    try:
        result = compare(args.base, args.lever, resamples=args.resamples)
    except (OSError, ValueError) as exc:
        sys.exit(f"cv_compare: {exc}")
    name = "+".join(p.name for p in args.base)
    (args.lever[0] / f"compare_{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(describe(result))
    return result


if __name__ == "__main__":
    main()
