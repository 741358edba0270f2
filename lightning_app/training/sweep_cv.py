"""``make sweep SWEEP_CV=0,1,2``: trials scored by grouped cross-validation, not one split.

One validation split of ~55 groups cannot rank recipes that differ by a point or two (the
single-split sweep's winner did not beat the old recipe on test). Here a trial is the
recipe run on some folds of the same stratified grouped k-fold split ``make cv`` uses
(:mod:`lightning_app.training.cv`: each fold a plain ``fit`` with ``--data.cv_fold``, its
checkpoint and temperature chosen on an inner split, its held-out fold scored once), and its
value is the **pooled out-of-fold accuracy** over those folds. The test split is never read.

* pruning: after each fold the trial reports that fold's accuracy (step = the fold's place
  in the screen), and the study's median pruner compares it with earlier trials on the same
  fold; a pruned trial stops before its next fold;
* budget: a fold whose ``fit`` took longer than ``--budget`` seconds prunes the trial (a fold
  trains on ~70 % of the data ``make fit`` does, so this is conservative);
* confirmation: the screened folds are kept under ``runs/sweeps/<name>/trial_<N>/`` in
  ``make cv``'s layout, so :func:`confirm_command` (all k folds, the screened ones skipped)
  turns the best screen into a full CV run, and ``make cv-compare`` pairs it with the
  baseline fold by fold.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from lightning_app.training import cv
from lightning_app.training import evaluation as ev
from lightning_app.training import predictions as pred


def objective(k: int, folds: Sequence[int]) -> str:
    """What a cross-validated study maximises, as stored with the study and printed."""
    return f"cv/acc (folds {','.join(map(str, folds))} of {k})"


def overrides(trial: optuna.trial.FrozenTrial | optuna.Trial, fixed: Sequence[str]) -> list[str]:
    """The trial's parameters as dotted ``KEY=VALUE`` overrides, then the fixed ones."""
    return [f"{key}={value}" for key, value in trial.params.items()] + list(fixed)


def fold_accuracy(run_dir: Path) -> float:
    """Accuracy of one fold's calibrated out-of-fold predictions."""
    part = pred.read(run_dir / pred.FILE)
    return float(ev.summary(part.probs, part.targets)["accuracy"])


def run_cv_trial(
    study: optuna.Study, space: dict[str, BaseDistribution], args: argparse.Namespace, root: Path
) -> TrialState:
    """Ask for one trial, run its folds one by one (pruning between them), tell the study."""
    trial = study.ask(space)
    sets = overrides(trial, args.set)
    out = root / f"trial_{trial.number:03d}"
    print(f"trial {trial.number}: " + " ".join(f"{k}={v}" for k, v in trial.params.items()), flush=True)
    start, run_dirs, seconds = time.perf_counter(), [], []
    for step, fold in enumerate(args.cv):
        fold_dir = out / f"fold_{fold}"
        try:
            run_dirs.append(
                cv.run_fold(
                    cv.fold_command(args.config, sets, args.cv_folds, fold, fold_dir),
                    fold_dir,
                    fold,
                    args.lock,
                )
            )
        except RuntimeError as err:
            study.tell(trial, state=TrialState.FAIL)
            print(f"trial {trial.number}: failed: {err}", flush=True)
            return TrialState.FAIL
        seconds.append(cv.fold_seconds(fold_dir) or 0.0)
        trial.report(fold_accuracy(run_dirs[-1]), step=step)
        trial.set_user_attr("folds", len(run_dirs))
        trial.set_user_attr("projected_s", round(sum(seconds) / len(seconds), 1))
        trial.set_user_attr("wall_s", round(time.perf_counter() - start, 1))
        trial.set_user_attr("run_dir", str(out))
        if step + 1 == len(args.cv):
            break
        why = (
            f"over budget (a fold took {seconds[-1]:.0f} s)"
            if args.budget and seconds[-1] > args.budget
            else "below median"
            if trial.should_prune()
            else ""
        )
        if why:
            trial.set_user_attr("pruned", why)
            study.tell(trial, state=TrialState.PRUNED)
            print(f"trial {trial.number}: pruned, {why}, after {len(run_dirs)} folds", flush=True)
            return TrialState.PRUNED
    recipe = {"name": out.name, "k": args.cv_folds, "configs": args.config, "overrides": sets}
    result = cv.report(run_dirs, out, args.cv, recipe, resamples=args.resamples)
    value = float(result["pooled"]["accuracy"]["value"])
    trial.set_user_attr("auroc", round(float(result["pooled"]["auroc"]["value"]), 4))
    study.tell(trial, value)
    print(f"trial {trial.number}: pooled out-of-fold accuracy {value:.4f} over folds {args.cv}", flush=True)
    return TrialState.COMPLETE


def confirm_command(best: optuna.trial.FrozenTrial, args: argparse.Namespace, root: Path) -> str:
    """The ``make cv`` run that confirms a screened trial on all k folds (screened folds reused).

    The trial's folder is its ``run_dir`` (a study re-seeded from CSV numbers trials anew).
    """
    run_dir = Path(best.user_attrs.get("run_dir") or root / f"trial_{best.number:03d}")
    parts = ["python -m lightning_app.training.cv", f"--root {run_dir.parent}", f"--name {run_dir.name}"]
    parts += [f"--folds {args.cv_folds}", *(f"--config {c}" for c in args.config)]
    return " ".join(parts + [f"--set {kv}" for kv in overrides(best, args.set)])
