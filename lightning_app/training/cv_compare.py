"""Paired comparison of two CV runs on the same folds (is lever B better than baseline A).

Both runs must come from the same fold split (same ``k`` and seed), so every out-of-fold
image has a prediction from each. Reported, on the folds both have finished:

* per fold, the difference in accuracy (B - A) and its mean +- SD over folds;
* pooled, the difference in accuracy, AUROC, tumour sensitivity and ECE with a 95 % percentile
  interval from resampling whole near-duplicate groups (the same groups for A and B, so the
  pairing removes the fold-to-fold spread that both share).

``python -m lightning_app.training.cv_compare runs/cv/default runs/cv/headcrop``
"""

from __future__ import annotations

import argparse
import json
import statistics
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


def _aligned(a: pred.Predictions, b: pred.Predictions) -> tuple[pred.Predictions, pred.Predictions]:
    """``b`` re-ordered to ``a``'s images (raises if the two folds hold different images)."""
    if set(a.paths) != set(b.paths):
        raise ValueError("the two runs' folds hold different images: not the same fold split")
    index = {p: i for i, p in enumerate(b.paths)}
    order = torch.tensor([index[p] for p in a.paths])
    return a, pred.Predictions(a.paths, a.groups, b.targets[order], b.probs[order], b.class_names)


def compare(base_dir: Path, lever_dir: Path, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Paired differences (lever - base) per common fold and pooled with group-bootstrap CIs."""
    base, lever = fold_predictions(base_dir), fold_predictions(lever_dir)
    common = sorted(set(base) & set(lever))
    if not common:
        raise ValueError(f"no finished fold in common between {base_dir} and {lever_dir}")
    pairs = [_aligned(base[f], lever[f]) for f in common]
    positive = positive_class(pairs[0][0].class_names)
    per_fold = []
    for fold, (a, b) in zip(common, pairs, strict=True):
        sa, sb = (
            headline(ev.summary(a.probs, a.targets), positive),
            headline(ev.summary(b.probs, b.targets), positive),
        )
        per_fold.append(
            {
                "fold": fold,
                "base": sa["accuracy"],
                "lever": sb["accuracy"],
                "diff": sb["accuracy"] - sa["accuracy"],
            }
        )
    a_all, b_all = pred.pool([p[0] for p in pairs]), pred.pool([p[1] for p in pairs])
    n_classes = a_all.probs.shape[1]
    both = torch.cat([a_all.probs, b_all.probs], dim=1)  # one tensor, so both are resampled alike

    def diff(probs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        sa = headline(ev.summary(probs[:, :n_classes], targets), positive)
        sb = headline(ev.summary(probs[:, n_classes:], targets), positive)
        return {k: sb[k] - sa[k] for k in sa}

    cis = ev.bootstrap(both, a_all.targets, a_all.groups, statistic=diff, n_resamples=resamples, seed=seed)
    diffs = [f["diff"] for f in per_fold]
    return {
        "base": str(base_dir),
        "lever": str(lever_dir),
        "folds": common,
        "per_fold": per_fold,
        "fold_diff_mean": statistics.fmean(diffs),
        "fold_diff_sd": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
        "pooled_diff": cis,
        "n_images": len(a_all),
        "n_groups": len(set(a_all.groups)),
    }


def describe(result: dict[str, Any]) -> str:
    """A few lines: per-fold accuracy differences, then the pooled paired differences with CIs."""
    folds, n, groups = result["folds"], result["n_images"], result["n_groups"]
    lines = [f"{result['lever']} - {result['base']} on folds {folds} ({n} images, {groups} groups)"]
    for f in result["per_fold"]:
        base, lever, delta = f["base"] * 100, f["lever"] * 100, f["diff"] * 100
        lines.append(f"  fold {f['fold']}: accuracy {base:.1f} -> {lever:.1f} ({delta:+.1f} points)")
    mean, sd = result["fold_diff_mean"] * 100, result["fold_diff_sd"] * 100
    lines.append(f"  per-fold accuracy difference: {mean:+.1f} +- {sd:.1f} points")
    for key, ci in result["pooled_diff"].items():
        scale, unit = (100, " points") if key in ("accuracy", "sensitivity", "specificity") else (1, "")
        value, low, high = (ci[k] * scale for k in ("value", "low", "high"))
        lines.append(f"  pooled {key}: {value:+.3g}{unit} (95 % CI {low:+.3g} to {high:+.3g})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Compare two CV run directories; print the summary and write ``compare_<base>.json`` in the lever's."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_app.training.cv_compare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("base", type=Path, help="the baseline's runs/cv/NAME")
    parser.add_argument("lever", type=Path, help="the lever's runs/cv/NAME")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args(argv)
    result = compare(args.base, args.lever, resamples=args.resamples)
    (args.lever / f"compare_{args.base.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(describe(result))
    return result


if __name__ == "__main__":
    main()
