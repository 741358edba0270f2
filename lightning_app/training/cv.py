"""``make cv``: stratified grouped k-fold cross-validation of a recipe, resumable, pooled.

Each fold is one full recipe run, ``python -m lightning_app fit`` in its own process with
``--data.cv_fold K`` (:func:`lightning_app.data.folds.cv_view`: outer fold ``K`` is the test
split, the other folds give an inner train/val split for checkpoint choice and temperature
scaling), under ``runs/cv/<name>/fold_<K>/version_<N>/``. Its ``predictions.csv`` (calibrated
out-of-fold probabilities) marks the fold done, so a re-run skips it. Then the folds are pooled:

* per fold and mean +- SD: accuracy, AUROC, sensitivity/specificity of the positive class
  (tumour), ECE;
* pooled out-of-fold: the same with 95 % percentile intervals from resampling whole
  near-duplicate groups over every fold (:func:`lightning_app.training.evaluation.bootstrap`);
* ``cv.json``, ``cv.md`` (the table), ``roc_curve.png`` and ``reliability_diagram.png`` in
  ``runs/cv/<name>/``; the table is printed.

The manifest's test split is never used. ``--lock FILE`` runs each fold under ``flock FILE``
(a shared machine's CPU lock; the fold's time is counted once the lock is held).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from lightning_app.data.atomic import write_text
from lightning_app.models import screening
from lightning_app.training import evaluation as ev
from lightning_app.training import predictions as pred
from lightning_app.training.plots import plot_reliability, plot_roc
from lightning_app.training.runs import newest_run

ROOT = Path("runs/cv")
FOLD_JSON = "fold.json"
ROC, RELIABILITY = FIGURES = ("roc_curve.png", "reliability_diagram.png")
#: Headline numbers: keys of a stats dict, in the table's order.
COLUMNS = ("accuracy", "auroc", "sensitivity", "specificity", "ece")


def fold_command(
    configs: Sequence[str], overrides: Sequence[str], k: int, fold: int, fold_dir: Path
) -> list[str]:
    """The ``fit`` command of one fold: the recipe, the overrides, then the fold's data view."""
    cmd = [sys.executable, "-m", "lightning_app", "fit"]
    for config in configs:
        cmd += ["--config", config]
    cmd += [f"--{kv}" if "=" in kv else kv for kv in overrides]
    cmd += [f"--data.cv_folds={k}", f"--data.cv_fold={fold}"]
    cmd += [f"--trainer.default_root_dir={fold_dir}", "--trainer.enable_progress_bar=false"]
    return cmd


@contextmanager
def _flock(path: str) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def finished(fold_dir: Path) -> Path | None:
    """The fold's newest run with out-of-fold predictions, or ``None`` if it has not finished."""
    return newest_run(fold_dir, having=pred.FILE) if fold_dir.is_dir() else None


def run_fold(cmd: list[str], fold_dir: Path, fold: int, lock: str | None) -> Path:
    """Run one fold (unless finished); return its run directory. Raises if the run fails."""
    done = finished(fold_dir)
    if done:
        print(f"fold {fold}: done ({done}), skipped", flush=True)
        return done
    fold_dir.mkdir(parents=True, exist_ok=True)
    print(f"fold {fold}: " + " ".join(cmd[1:]), flush=True)
    with _flock(lock) if lock else nullcontext():
        start = time.perf_counter()
        with (fold_dir / "log.txt").open("w") as log:
            env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
            code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        seconds = time.perf_counter() - start
    write_text(
        fold_dir / FOLD_JSON, json.dumps({"fold": fold, "seconds": round(seconds, 1), "exit": code}) + "\n"
    )
    done = finished(fold_dir)
    if code != 0 or done is None:
        raise RuntimeError(f"fold {fold} failed (exit {code}); log: {fold_dir / 'log.txt'}")
    print(f"fold {fold}: {seconds / 60:.1f} min", flush=True)
    return done


def positive_class(names: Sequence[str]) -> int:
    """The class whose sensitivity is reported: ``tumor``/``yes`` if present, else the last."""
    for i, name in enumerate(names):
        if name.lower() in ("tumor", "tumour", "yes"):
            return i
    return len(names) - 1


def headline(stats: dict[str, Any], positive: int) -> dict[str, Any]:
    """The reported subset of an :func:`evaluation.summary` (or bootstrap) dict."""
    return {
        "accuracy": stats["accuracy"],
        "auroc": stats["auroc"],
        "sensitivity": stats[f"sensitivity/{positive}"],
        "specificity": stats[f"specificity/{positive}"],
        "ece": stats["ece"],
    }


def fold_seconds(fold_dir: Path) -> float | None:
    """The wall time of the fold's ``fit`` (its lock held), as :func:`run_fold` recorded it."""
    path = fold_dir / FOLD_JSON
    return float(json.loads(path.read_text())["seconds"]) if path.is_file() else None


def pool_folds(
    run_dirs: Sequence[Path], out: Path, resamples: int = 1000, fold_ids: Sequence[int] | None = None
) -> dict[str, Any]:
    """Per-fold numbers, mean +- SD and pooled group-bootstrap CIs; plots into ``out``."""
    fold_ids = list(fold_ids) if fold_ids is not None else list(range(len(run_dirs)))
    parts = [pred.read(d / pred.FILE) for d in run_dirs]
    pooled = pred.pool(parts)
    positive = positive_class(pooled.class_names)
    folds: list[dict[str, Any]] = []
    for i, d, p in zip(fold_ids, run_dirs, parts, strict=True):
        stats = headline(ev.summary(p.probs, p.targets), positive)
        folds.append(
            {"fold": i, "run_dir": str(d), "n_images": len(p), "n_groups": len(set(p.groups))}
            | stats
            | {"seconds": fold_seconds(d.parent)}
        )
    spread = {}
    for key in COLUMNS:
        values = [f[key] for f in folds if not math.isnan(f[key])]
        spread[key] = {
            "mean": statistics.fmean(values) if values else math.nan,
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        }
    cis = ev.bootstrap(pooled.probs, pooled.targets, pooled.groups, n_resamples=resamples)
    pooled_stats = {key: cis[src] for key, src in headline({k: k for k in cis}, positive).items()}
    out.mkdir(parents=True, exist_ok=True)
    plot_roc(pooled.probs, pooled.targets, pooled.class_names, out / ROC)
    plot_reliability({"pooled out-of-fold": ev.reliability(pooled.probs, pooled.targets)}, out / RELIABILITY)
    seconds = [f["seconds"] for f in folds if f["seconds"] is not None]
    point = screening.choose(
        pooled.probs.tolist(), pooled.targets.tolist(), pooled.class_names, chosen_on="out-of-fold (make cv)"
    )
    return {
        "folds_run": fold_ids,
        "class_names": pooled.class_names,
        "positive_class": pooled.class_names[positive],
        "n_images": len(pooled),
        "n_groups": len(set(pooled.groups)),
        "folds": folds,
        "mean_sd": spread,
        "pooled": pooled_stats,
        "ci": {
            "method": f"percentile bootstrap, {resamples} resamples of near-duplicate groups",
            "level": 0.95,
        },
        "minutes": round(sum(seconds) / 60, 1) if seconds else None,
        "figures": list(FIGURES),
        # the threshold for sensitivity >= 97 % on every out-of-fold scan (its rates are where
        # it was chosen); each fold's own, validation-chosen point measured on its held-out fold:
        "operating_point": None if point is None else point.as_dict(),
        "fold_operating_points": [_fold_point(d) for d in run_dirs],
    }


def _fold_point(run_dir: Path) -> dict[str, Any] | None:
    """A fold's operating point (where it was chosen) and its rates on the fold's out-of-fold scans."""
    try:
        point = json.loads((run_dir / "metrics.json").read_text()).get("operating_point")
    except (OSError, ValueError):
        return None
    if not point:
        return None
    test = point.get("test", {})
    return {
        "threshold": point["threshold"],
        "chosen_on": point.get("chosen_on", "validation"),
        "sensitivity": (test.get("sensitivity") or {}).get("value"),
        "specificity": (test.get("specificity") or {}).get("value"),
    }


def operating_point_lines(result: dict[str, Any]) -> list[str]:
    """What the table leaves out: the out-of-fold operating point and each fold's own."""
    lines = []
    point = result.get("operating_point")
    if point:
        lines.append(
            f"operating point on the pooled out-of-fold scans: P(not {point['negative_class']}) >= "
            f"{point['threshold']:.4f} gives sensitivity {point['sensitivity']:.1%}, specificity "
            f"{point['specificity']:.1%} (model.operating_threshold in a config ships it)"
        )
    for fold, own in zip(result["folds_run"], result.get("fold_operating_points", []), strict=False):
        if own and own["sensitivity"] is not None:
            lines.append(
                f"fold {fold}: its threshold {own['threshold']:.4f} (chosen on "
                f"{own.get('chosen_on', 'validation')}) gives sensitivity {own['sensitivity']:.1%}, "
                f"specificity {own['specificity']:.1%} on the held-out fold"
            )
    return lines


def _pct(value: float, scale: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * scale:.1f}" if scale == 100 else f"{value:.3f}"


def table(result: dict[str, Any]) -> str:
    """The markdown table: one row per fold, mean +- SD, pooled with 95 % CI."""
    scales = {"accuracy": 100, "auroc": 1, "sensitivity": 100, "specificity": 100, "ece": 1}
    pos = result["positive_class"]
    head = ["fold", "images", "groups", "acc %", "AUROC", f"sens % ({pos})", f"spec % ({pos})", "ECE", "min"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in result["folds"]:
        cells = [str(f["fold"]), str(f["n_images"]), str(f["n_groups"])]
        cells += [_pct(f[key], scales[key]) for key in COLUMNS]
        cells.append(f"{f['seconds'] / 60:.1f}" if f["seconds"] else "")
        lines.append("| " + " | ".join(cells) + " |")
    ms = result["mean_sd"]
    cells = ["mean +- SD", "", ""]
    cells += [f"{_pct(ms[k]['mean'], scales[k])} +- {_pct(ms[k]['sd'], scales[k])}" for k in COLUMNS]
    lines.append("| " + " | ".join([*cells, ""]) + " |")
    p = result["pooled"]
    cells = ["pooled (95 % CI)", str(result["n_images"]), str(result["n_groups"])]
    cells += [
        f"{_pct(p[k]['value'], scales[k])} ({_pct(p[k]['low'], scales[k])}-{_pct(p[k]['high'], scales[k])})"
        for k in COLUMNS
    ]
    lines.append("| " + " | ".join([*cells, str(result["minutes"] or "")]) + " |")
    return "\n".join(lines) + "\n"


def report(
    run_dirs: Sequence[Path],
    out: Path,
    fold_ids: Sequence[int],
    recipe: dict[str, Any],
    resamples: int = 1000,
) -> dict[str, Any]:
    """Pool the folds (:func:`pool_folds`), add the ``recipe`` facts, write ``cv.json`` and ``cv.md``."""
    result = pool_folds(run_dirs, out, resamples=resamples, fold_ids=fold_ids) | recipe
    write_text(out / "cv.json", json.dumps(result, indent=2, allow_nan=True) + "\n")
    write_text(out / "cv.md", table(result))
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume) every fold, pool them, write ``cv.json``/``cv.md``/plots, print the table."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_app.training.cv", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--name", default="default", help="runs/cv/NAME holds the folds and the report")
    parser.add_argument("--folds", type=int, default=5, help="k (default 5)")
    parser.add_argument("--config", action="append", default=[], help="recipe config(s), in order")
    parser.add_argument("--set", action="append", default=[], help="dotted override KEY=VALUE (repeatable)")
    parser.add_argument("--root", type=Path, default=ROOT, help="where NAME/ goes (default runs/cv)")
    parser.add_argument(
        "--lock", default=os.environ.get("CV_LOCK") or None, help="run each fold under flock FILE"
    )
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument(
        "--only", default="", help="comma-separated folds to run and pool (a screen on some of the k folds)"
    )
    args = parser.parse_args(argv)
    out = args.root / args.name
    chosen = sorted({int(f) for f in args.only.split(",") if f.strip()}) or list(range(args.folds))
    run_dirs = []
    for fold in chosen:
        fold_dir = out / f"fold_{fold}"
        cmd = fold_command(args.config, args.set, args.folds, fold, fold_dir)
        run_dirs.append(run_fold(cmd, fold_dir, fold, args.lock))
    recipe = {"name": args.name, "k": args.folds, "configs": args.config, "overrides": args.set}
    result = report(run_dirs, out, chosen, recipe, resamples=args.resamples)
    folds = f"folds {args.only} of " if args.only else ""
    recipe_text = " ".join([*(args.config or ["configs/base.yaml"]), *args.set])
    print(f"\n{folds}{args.folds}-fold grouped CV of {recipe_text}")
    print(table(result))
    print("\n".join(operating_point_lines(result)))
    print("written: " + ", ".join(str(out / f) for f in ("cv.json", "cv.md", *FIGURES)))
    return result


if __name__ == "__main__":
    main()
