"""``make sweep``: an Optuna study over real LightningCLI runs, offline, resumable, pruned.

Each trial is ``python -m lightning_app fit`` in its own process with dotted overrides on top
of the base configs (``--model.lr=...``, ``--data.image_size=...``), logged to W&B offline in
its own run directory, tested on nothing: trials are compared by **validation accuracy only**
(``val/acc``, the best epoch), so the test split stays unseen while the recipe is chosen.

* storage: SQLite at ``runs/sweeps/<name>/study.db`` (``load_if_exists``), so re-running adds
  trials; trials left running by a killed sweep are marked failed. ``--csv`` exports every
  trial, and a fresh clone re-seeds the study from that CSV (committed under
  ``benchmarks/sweeps/``) so a later run extends it rather than starting over;
* pruning: median pruner on ``val/acc`` per epoch, reported from inside the trial process by
  :class:`OptunaReport` (it stops the trainer; the driver records the trial as pruned);
* budget: ``--budget S`` prunes a trial as soon as its projected training wall time
  (elapsed / epochs done x max_epochs) exceeds ``S`` seconds: a recipe that cannot train
  within the budget on this machine cannot be the default (the goal is ``make fit`` in
  15 min on 2 cores), so the study spends no more time on it;
* ``--enqueue KEY=VALUE,...`` puts a known recipe first (e.g. the current default), so the
  study measures the baseline it must beat on the same terms;
* ``--lock FILE`` runs each trial under ``flock FILE`` (a shared machine's CPU lock), so the
  driver holds nothing while it waits.

The search space is ``configs/sweeps/recipe.yaml`` (also the ``wandb sweep`` config), read by
:mod:`lightning_app.training.sweep_space` into :data:`SPACE`; ``--space FILE`` reads another.

``--cv 0,1,2`` scores each trial by grouped cross-validation on those folds of ``make cv``'s
k-fold split instead (:mod:`lightning_app.training.sweep_cv`): pooled out-of-fold accuracy,
median pruning between folds. A study keeps the objective it was created with.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from lightning_app.training.runs import run_dirs
from lightning_app.training.sweep_cv import confirm_command, objective, run_cv_trial
from lightning_app.training.sweep_space import SPACE_FILE, export, load_space, parse, seed_from_csv, table

MONITOR = "val/acc"
MAX_FAILURES = 3


class OptunaReport(L.Callback):
    """Inside a trial's process: report ``val/acc`` each epoch; stop when the pruner says so."""

    def __init__(
        self,
        storage: str,
        study_name: str,
        trial_id: int,
        out: str,
        warmup_epochs: int = 3,
        startup: int = 3,
        budget_s: float = 0.0,
    ) -> None:
        self.budget_s = budget_s
        self.start = time.perf_counter()
        pruner = optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup_epochs)
        study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
        self.trial = optuna.trial.Trial(study, trial_id)
        self.out = Path(out)
        self.history: list[float] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Report the epoch's validation accuracy; prune if below the median of earlier trials."""
        if trainer.sanity_checking or MONITOR not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[MONITOR])
        self.history.append(value)
        self.trial.report(value, step=trainer.current_epoch)
        projected = (time.perf_counter() - self.start) / len(self.history) * (trainer.max_epochs or 1)
        over_budget = bool(self.budget_s) and projected > self.budget_s
        pruned = over_budget or bool(self.trial.should_prune())  # numpy bool: not JSON
        progress = {"history": self.history, "pruned": pruned, "projected_s": round(projected, 1)}
        self.out.write_text(json.dumps(progress | ({"over_budget": True} if over_budget else {})))
        if pruned:
            trainer.should_stop = True


def _mark_abandoned(study: optuna.Study) -> None:
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)


def command(
    configs: list[str], overrides: dict[str, Any], run_root: Path, report: dict[str, Any] | None
) -> list[str]:
    """The trial's command line: the real CLI, its configs, then dotted overrides."""
    cmd = [sys.executable, "-m", "lightning_app", "fit"]
    for config in configs:
        cmd += ["--config", config]
    cmd += [f"--{key}={value}" for key, value in overrides.items()]
    cmd += [f"--trainer.default_root_dir={run_root}", "--trainer.enable_progress_bar=false"]
    cmd += ["--test_after_fit=false"]  # choose by validation only: the test split stays unseen
    if report:
        cmd += ["--trainer.callbacks+=lightning_app.training.sweep.OptunaReport"]
        cmd += [f"--trainer.callbacks.{key}={value}" for key, value in report.items()]
    return cmd


def run_trial(
    study: optuna.Study,
    space: dict[str, BaseDistribution],
    args: argparse.Namespace,
    storage: str,
    root: Path,
) -> TrialState:
    """Ask for one trial, run it as a subprocess, tell the study how it ended."""
    trial = study.ask(space)
    overrides = {**trial.params, **dict(kv.split("=", 1) for kv in args.set)}
    trial_dir = root / f"trial_{trial.number:03d}"
    progress = trial_dir / "progress.json"
    trial_dir.mkdir(parents=True, exist_ok=True)
    report = {"storage": storage, "study_name": args.name, "trial_id": trial._trial_id, "out": str(progress)}
    if args.budget:
        report["budget_s"] = args.budget
    cmd = command(args.config, overrides, trial_dir, report)
    if args.lock:
        cmd = ["flock", args.lock, *cmd]
    print(f"trial {trial.number}: " + " ".join(f"{k}={v}" for k, v in trial.params.items()), flush=True)
    start = time.perf_counter()
    with (trial_dir / "log.txt").open("w") as log:
        code = subprocess.run(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "WANDB_MODE": "offline"}
        ).returncode
    wall = time.perf_counter() - start
    done = json.loads(progress.read_text()) if progress.is_file() else {}
    history: list[float] = list(done.get("history", []))
    runs = run_dirs(trial_dir)
    trial.set_user_attr("wall_s", round(wall, 1))
    trial.set_user_attr("epochs", len(history))
    if "projected_s" in done:
        trial.set_user_attr("projected_s", done["projected_s"])
    trial.set_user_attr("run_dir", str(runs[-1]) if runs else "")
    if history:
        trial.set_user_attr("best_epoch", history.index(max(history)))
    if code != 0 or not history:
        study.tell(trial, state=TrialState.FAIL)
        print(f"trial {trial.number}: failed (exit {code}); log {trial_dir / 'log.txt'}", flush=True)
        return TrialState.FAIL
    if done.get("pruned"):
        why = (
            f"over budget (projected {done['projected_s']:.0f} s)"
            if done.get("over_budget")
            else "below median"
        )
        trial.set_user_attr("pruned", why)
        study.tell(trial, state=TrialState.PRUNED)
        print(f"trial {trial.number}: pruned, {why}, after {len(history)} epochs ({wall:.0f} s)", flush=True)
        return TrialState.PRUNED
    study.tell(trial, max(history))
    print(f"trial {trial.number}: best {MONITOR} {max(history):.4f} ({wall:.0f} s)", flush=True)
    return TrialState.COMPLETE


def _folds(text: str) -> list[int]:
    """``--cv 0,1,2``: distinct fold numbers, sorted; anything else is a one-line usage error."""
    try:
        folds = sorted({int(f) for f in text.split(",") if f.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of fold numbers") from None
    if not folds or folds[0] < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give fold numbers from 0, e.g. 0,1,2")
    return folds


def main(argv: list[str] | None = None) -> int:
    """Run (or extend) a study; print its table."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_app.training.sweep", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--name", default="recipe")
    parser.add_argument("--config", action="append", default=None, help="base config(s) of every trial")
    parser.add_argument("--trials", type=int, default=8, help="finished trials wanted in the study in all")
    parser.add_argument("--timeout", type=float, default=None, help="start no trial after this many seconds")
    parser.add_argument("--root", type=Path, default=Path("runs/sweeps"))
    parser.add_argument(
        "--csv", type=Path, default=None, help="export/seed file (default benchmarks/sweeps/NAME.csv)"
    )
    parser.add_argument("--set", action="append", default=[], help="fixed override KEY=VALUE for every trial")
    parser.add_argument(
        "--lock", default=os.environ.get("SWEEP_LOCK") or None, help="run each trial under flock FILE"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--budget", type=float, default=0.0, help="prune trials projected to train longer (s)"
    )
    parser.add_argument("--enqueue", action="append", default=[], help="a recipe to run first: K=V,K=V,...")
    parser.add_argument("--space", type=Path, default=SPACE_FILE, help="the search space (a W&B sweep YAML)")
    parser.add_argument(
        "--cv", type=_folds, default=[], help="score trials by grouped CV on these folds: 0,1,2"
    )
    parser.add_argument("--cv-folds", type=int, default=5, help="k of the CV split (with --cv)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of a CV trial")
    args = parser.parse_args(argv)
    args.config = args.config or ["configs/default.yaml"]
    if any(fold >= args.cv_folds for fold in args.cv):
        parser.error(f"argument --cv: folds {args.cv} are not all below --cv-folds {args.cv_folds}")
    space = load_space(args.space)
    goal = objective(args.cv_folds, args.cv) if args.cv else MONITOR
    root = args.root / args.name
    root.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(root / 'study.db').resolve()}"
    csv_path = args.csv or Path("benchmarks/sweeps") / f"{args.name}.csv"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=args.name, storage=storage, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=args.seed, n_startup_trials=4),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
    )  # fmt: skip
    _mark_abandoned(study)
    if (held := study.user_attrs.get("objective", MONITOR if study.trials else goal)) != goal:
        print(f"error: study {args.name} maximises {held}, not {goal}; use another --name", file=sys.stderr)
        return 2
    study.set_user_attr("objective", goal)
    if added := seed_from_csv(study, csv_path, space):
        print(f"study {args.name}: seeded with {added} trials from {csv_path}")
    for recipe in args.enqueue:
        params = {k: parse(k, v, space) for k, v in (kv.split("=", 1) for kv in recipe.split(","))}
        study.enqueue_trial(params, skip_if_exists=True)
    start = time.perf_counter()
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    failures = 0
    while len(study.get_trials(deepcopy=False, states=finished)) < args.trials:
        if args.timeout is not None and time.perf_counter() - start > args.timeout:
            print(f"study {args.name}: --timeout {args.timeout:g} s reached")
            break
        if args.cv:
            state = run_cv_trial(study, space, args, root)
        else:
            state = run_trial(study, space, args, storage, root)
        failures = failures + 1 if state == TrialState.FAIL else 0
        export(study, csv_path, space)
        if failures >= MAX_FAILURES:
            print(f"error: {failures} trials in a row failed; see their log.txt", file=sys.stderr)
            return 1
    export(study, csv_path, space)
    print(table(study, space, goal, per_fold=bool(args.cv)))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete:
        best = max(complete, key=lambda t: t.value or 0)
        print(
            f"best by {goal}: trial {best.number} ({best.value:.4f}): "
            + " ".join(f"--{k}={v}" for k, v in best.params.items())
        )
        if args.cv:
            print(f"confirm on all {args.cv_folds} folds: {confirm_command(best, args, root)}")
    print(f"study: {storage}  trials: {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
