"""Ensembles judged out of fold: several CV runs of the same folds, their probabilities averaged.

Runs of ``make cv`` that differ only in the recipe or the seed hold out exactly the same images
in each fold (the folds follow ``data.seed``, not the training seed). For every fold finished
in all of them, the calibrated out-of-fold probabilities are averaged image by image and
written as a CV run of its own, ``runs/cv/<out>/fold_K/version_0/predictions.csv``, so
``make cv``'s pooling and the paired ``cv_compare`` judge the ensemble against any member on
the same images. No model is loaded: this measures what an ensemble would score before anyone
builds one.

``python -m lightning_app.training.ensemble runs/cv/default runs/cv/seed7 --out runs/cv/ens2``

``--curve`` asks how the gain grows with the members: for each size k, every k of the runs
averaged over the folds finished in all of them, and the mean, SD and range over those subsets
of pooled accuracy, AUROC and the specificity at 97 % tumour sensitivity (each subset's own
threshold), point estimates without bootstrap (seconds). Nothing is written.

``python -m lightning_app.training.ensemble runs/cv/default runs/cv/seed7 runs/cv/seed11 --curve``

``--cascade C`` (with ``--out``) asks what a cascade would keep of the gain: the FIRST run
answers alone where its top calibrated probability reaches ``C`` (and, with ``--margin M``, its
screening score lies at least ``M`` log-odds from the whole ensemble's out-of-fold threshold:
:class:`~lightning_app.inference.cascade.CascadeRule`, the served rule), and only the scans it
is less sure of get the mean of all runs. The run is written like an ensemble (so
``cv_compare`` pairs it with the full ensemble or the first run), and ``cv.json`` adds the share
of scans deferred, the cost in forward passes per scan as served, ``1 + (N - 1) x deferred``
(the doubtful scans go through the other members' graph as well; the full ensemble: ``N``), and the
screening decisions at the ensemble's threshold beside the ensemble's own.

``python -m lightning_app.training.ensemble runs/cv/default runs/cv/seed7 runs/cv/seed11 --cascade 0.9
--out runs/cv/cascade90``
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch

from lightning_app.data.atomic import write_text
from lightning_app.inference.cascade import CascadeRule
from lightning_app.models import screening
from lightning_app.training import evaluation as ev
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


def cascade(
    members: Sequence[pred.Predictions], rule: CascadeRule, point: screening.OperatingPoint | None = None
) -> tuple[pred.Predictions, int]:
    """The first member where ``rule`` lets it answer alone, the mean of all elsewhere.

    ``point`` is the operating point the rule's margin keeps off (the served cascade's: the
    ensemble's). Returns the combined predictions and how many images were deferred.
    """
    mean = average(members)
    first = members[0].probs
    deferred = torch.from_numpy(rule.doubtful(first.numpy(), mean.class_names, point))
    probs = torch.where(deferred[:, None], mean.probs, first)
    combined = pred.Predictions(mean.paths, mean.groups, mean.targets, probs, mean.class_names)
    return combined, int(deferred.sum())


def decisions(
    cascaded: pred.Predictions, ensemble: pred.Predictions, point: screening.OperatingPoint
) -> dict[str, float]:
    """The cascade's screening decisions at the ensemble's threshold, beside the ensemble's own."""
    if cascaded.paths != ensemble.paths:
        raise ValueError("the cascade and the ensemble hold different images")
    negative = ensemble.class_names.index(point.negative_class)
    positive = [int(t) != negative for t in ensemble.targets.tolist()]
    ours = screening.scores(cascaded.probs.tolist(), negative)
    theirs = screening.scores(ensemble.probs.tolist(), negative)
    sens, spec = screening.rates(ours, positive, point.threshold)
    ens_sens, ens_spec = screening.rates(theirs, positive, point.threshold)
    return {
        "threshold": point.threshold,
        "sensitivity": sens,
        "specificity": spec,
        "ensemble_sensitivity": ens_sens,
        "ensemble_specificity": ens_spec,
        "decision_agreement": screening.agreement(
            point, ensemble.class_names, ensemble.probs.tolist(), cascaded.probs.tolist()
        ),
        # what the export's cascade gate also holds the served graphs to (its top-1 agreement)
        "top1_agreement": float((cascaded.probs.argmax(1) == ensemble.probs.argmax(1)).float().mean()),
    }


def run(cv_dirs: Sequence[Path], out_dir: Path, *, rule: CascadeRule | None = None) -> dict[str, object]:
    """Average every fold finished in all of ``cv_dirs`` into ``out_dir``; pool and return the result.

    With ``rule``, the :func:`cascade` of the runs instead of their plain mean, its margin kept
    off the operating point the whole ensemble's pooled out-of-fold scans choose.
    """
    if len(cv_dirs) < 2:
        raise ValueError("an ensemble needs at least two CV runs")
    point = None
    if rule is not None:
        ensemble = average(pooled_runs(cv_dirs))
        point = screening.choose(ensemble.probs.tolist(), ensemble.targets.tolist(), ensemble.class_names)
    runs, folds, deferred, scans = [], [], 0, 0
    combined_folds: list[pred.Predictions] = []  # what each fold wrote, pooled for the decisions
    for fold_dir in sorted(cv_dirs[0].glob("fold_*")):
        sources = [finished(d / fold_dir.name) for d in cv_dirs]
        if any(s is None for s in sources):
            continue
        target = out_dir / fold_dir.name / "version_0"
        target.mkdir(parents=True, exist_ok=True)
        members = [pred.read(s / pred.FILE) for s in sources if s is not None]
        combined, sent = (
            (average(members), len(members[0].paths)) if rule is None else cascade(members, rule, point)
        )
        pred.write(target / pred.FILE, combined)
        deferred, scans = deferred + sent, scans + len(combined.paths)
        runs.append(target)
        combined_folds.append(combined)
        folds.append(int(fold_dir.name.removeprefix("fold_")))
    if not runs:
        raise FileNotFoundError(f"no fold is finished in every one of {', '.join(map(str, cv_dirs))}")
    result = pool_folds(runs, out_dir, fold_ids=folds) | {"members": [str(d) for d in cv_dirs]}
    if rule is not None:
        share = deferred / scans
        result["cascade"] = {
            **rule.as_dict(),
            "deferred": share,
            "cost": 1 + (len(cv_dirs) - 1) * share,
        }
        if point is not None:
            result["cascade"] |= decisions(pred.pool(combined_folds), ensemble, point)
    write_text(out_dir / "cv.json", json.dumps(result, indent=2))
    write_text(out_dir / "cv.md", table(result))
    return result


def pooled_runs(cv_dirs: Sequence[Path]) -> list[pred.Predictions]:
    """Each run's out-of-fold predictions, pooled over the folds finished in every one of them."""
    folds: list[list[Path]] = []  # per fold, each run's finished run directory
    for fold_dir in sorted(cv_dirs[0].glob("fold_*")):
        found = [s for s in (finished(d / fold_dir.name) for d in cv_dirs) if s is not None]
        if len(found) == len(cv_dirs):
            folds.append(found)
    if not folds:
        raise FileNotFoundError(f"no fold is finished in every one of {', '.join(map(str, cv_dirs))}")
    return [pred.pool([pred.read(fold[i] / pred.FILE) for fold in folds]) for i in range(len(cv_dirs))]


def point(predictions: pred.Predictions) -> dict[str, float]:
    """Accuracy, AUROC and the specificity at 97 % tumour sensitivity (NaN without a ``no`` class)."""
    stats = ev.summary(predictions.probs, predictions.targets)
    chosen = screening.choose(
        predictions.probs.tolist(), predictions.targets.tolist(), predictions.class_names
    )
    spec = chosen.specificity if chosen is not None else float("nan")
    return {"accuracy": stats["accuracy"], "auroc": stats["auroc"], "specificity_at_97": spec}


def curve(cv_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """Per ensemble size k: the subsets' count and each metric's mean, SD, min and max."""
    runs = pooled_runs(cv_dirs)
    rows: list[dict[str, Any]] = []
    for k in range(1, len(runs) + 1):
        points = [point(average(subset)) for subset in itertools.combinations(runs, k)]
        row: dict[str, Any] = {"members": k, "subsets": len(points)}
        for name in points[0]:
            values = [p[name] for p in points]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            row[name] = {"mean": statistics.fmean(values), "sd": sd, "min": min(values), "max": max(values)}
        rows.append(row)
    return rows


def curve_table(rows: list[dict[str, Any]]) -> str:
    """The curve as markdown: mean +- SD (min-max) over the subsets of each size, in %."""

    def cell(stats: dict[str, float]) -> str:
        mean, sd, low, high = (100 * stats[k] for k in ("mean", "sd", "min", "max"))
        return f"{mean:.1f} +- {sd:.1f} ({low:.1f}-{high:.1f})"

    lines = [
        "| members | subsets | accuracy % | AUROC x 100 | specificity % at 97 % sensitivity |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        metrics = [cell(r[n]) for n in ("accuracy", "auroc", "specificity_at_97")]
        lines.append(f"| {r['members']} | {r['subsets']} | " + " | ".join(metrics) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m lightning_app.training.ensemble runs/cv/<a> runs/cv/<b> ... --out DIR | --curve``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv_dirs", type=Path, nargs="+")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", type=Path, help="write the ensemble of all the runs here")
    what.add_argument("--curve", action="store_true", help="every subset of every size, summarised")
    parser.add_argument(
        "--cascade", type=float, metavar="C", help="the first run alone where it is this sure (needs --out)"
    )
    parser.add_argument(
        "--margin", type=float, default=0.0, metavar="M", help="and its score M log-odds off the threshold"
    )
    args = parser.parse_args(argv)
    if args.cascade is not None and args.out is None:
        parser.error("--cascade needs --out")
    try:
        if args.curve:
            print(curve_table(curve(args.cv_dirs)))
            return
        rule = None if args.cascade is None else CascadeRule(args.cascade, args.margin)
        result = run(args.cv_dirs, args.out, rule=rule)
    except (OSError, ValueError) as exc:
        sys.exit(f"ensemble: {exc}")
    print(table(result))
    if "cascade" in result:
        c, n = cast(dict[str, float], result["cascade"]), len(args.cv_dirs)
        print(
            f"cascade at {c['confidence']}, margin {c['margin']}: {100 * c['deferred']:.1f} % of scans "
            f"deferred to all {n} runs; {c['cost']:.2f} forward passes per scan (the full ensemble: {n})"
        )
        if "threshold" in c:
            print(
                f"at the ensemble's threshold {c['threshold']:.4f}: "
                f"sensitivity {100 * c['sensitivity']:.1f} % "
                f"(ensemble {100 * c['ensemble_sensitivity']:.1f}), "
                f"specificity {100 * c['specificity']:.1f} % "
                f"(ensemble {100 * c['ensemble_specificity']:.1f}), "
                f"decisions agree on {100 * c['decision_agreement']:.2f} %, "
                f"top-1 answers on {100 * c['top1_agreement']:.2f} %"
            )


if __name__ == "__main__":
    main()
