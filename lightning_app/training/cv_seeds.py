"""The spread of one recipe over training seeds: several CV runs of it, side by side.

Each run is ``make cv`` of the same recipe and fold split at another ``seed_everything``
(``runs/cv/default,runs/cv/seed7,runs/cv/seed11``). On the folds every run has finished, it
reports each run's pooled out-of-fold accuracy, AUROC, tumour sensitivity and specificity and
ECE, then their mean, SD and range over the seeds, and the screening operating point two ways:

* the **shipped threshold** (the first run's out-of-fold choice, as ``fit`` ships it, or
  ``--threshold``) applied to every run: does it keep its sensitivity when only the seed changes;
* each run's **own** threshold for the target sensitivity (97 %) and the specificity it costs.

``python -m lightning_app.training.cv_seeds runs/cv/default,runs/cv/seed7,runs/cv/seed11``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_app.models import screening
from lightning_app.training import evaluation as ev
from lightning_app.training import predictions as pred
from lightning_app.training.cv import headline, positive_class
from lightning_app.training.cv_compare import fold_predictions

#: Reported per run, in this order, with their scale in the table (percent or as is).
COLUMNS = {
    "accuracy": 100,
    "auroc": 1,
    "sensitivity": 100,
    "specificity": 100,
    "ece": 1,
    "shipped_sensitivity": 100,
    "shipped_specificity": 100,
    "own_threshold": 1,
    "own_specificity": 100,
}


def shipped_threshold(run_dir: Path) -> float | None:
    """The out-of-fold operating threshold a CV run chose (``cv.json``), if it wrote one."""
    path = run_dir / "cv.json"
    point = json.loads(path.read_text()).get("operating_point") if path.is_file() else None
    return float(point["threshold"]) if point else None


def _point(p: pred.Predictions, threshold: float | None) -> screening.OperatingPoint | None:
    """``None`` where there is no screening question (no ``no_tumor`` class, or a side empty)."""
    probs, targets = p.probs.tolist(), p.targets.tolist()
    return screening.choose(probs, targets, p.class_names, threshold=threshold, chosen_on="out-of-fold")


def spread(run_dirs: Sequence[Path], threshold: float | None = None) -> dict[str, Any]:
    """Per-run pooled metrics on the common folds, and their mean, SD, min and max over the runs."""
    runs = [fold_predictions(d) for d in run_dirs]
    common = sorted(set.intersection(*(set(r) for r in runs)))
    if not common:
        raise ValueError(f"no finished fold in common between {', '.join(map(str, run_dirs))}")
    threshold = shipped_threshold(run_dirs[0]) if threshold is None else threshold
    rows = []
    for run_dir, folds in zip(run_dirs, runs, strict=True):
        p = pred.pool([folds[f] for f in common])
        row: dict[str, Any] = headline(ev.summary(p.probs, p.targets), positive_class(p.class_names))
        shipped = _point(p, threshold) if threshold is not None else None
        if shipped is not None:
            row["shipped_sensitivity"], row["shipped_specificity"] = shipped.sensitivity, shipped.specificity
        own = _point(p, None)
        if own is not None:
            row["own_threshold"], row["own_specificity"] = own.threshold, own.specificity
        rows.append({"run": str(run_dir), "images": len(p), **row})
    keys = [k for k in COLUMNS if all(k in r for r in rows)]
    summary = {
        k: {
            "mean": statistics.fmean(r[k] for r in rows),
            "sd": statistics.stdev(r[k] for r in rows) if len(rows) > 1 else 0.0,
            "min": min(r[k] for r in rows),
            "max": max(r[k] for r in rows),
        }
        for k in keys
    }
    return {"folds": common, "threshold": threshold, "runs": rows, "summary": summary}


def table(result: dict[str, Any]) -> str:
    """Markdown: a row per run, then mean +- SD and the range over the runs."""
    keys = list(result["summary"])
    fmt = {100: lambda v: f"{v * 100:.1f}", 1: lambda v: f"{v:.3f}"}
    head = "| run | " + " | ".join(k.replace("_", " ") for k in keys) + " |"
    lines = [head, "|" + "---|" * (len(keys) + 1)]
    for row in result["runs"]:
        lines.append(f"| {row['run']} | " + " | ".join(fmt[COLUMNS[k]](row[k]) for k in keys) + " |")
    s = result["summary"]
    cells = [f"{fmt[COLUMNS[k]](s[k]['mean'])} +- {fmt[COLUMNS[k]](s[k]['sd'])}" for k in keys]
    lines.append("| mean +- SD | " + " | ".join(cells) + " |")
    cells = [f"{fmt[COLUMNS[k]](s[k]['min'])}-{fmt[COLUMNS[k]](s[k]['max'])}" for k in keys]
    lines.append("| range | " + " | ".join(cells) + " |")
    shipped = result["threshold"]
    shipped_text = f"shipped threshold {shipped:.4f}" if shipped is not None else "no shipped threshold"
    lines.append(f"\nfolds {result['folds']}; {shipped_text}; own: each run's threshold for 97 % sensitivity")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Print the seed-spread table of the runs (and write it as JSON with ``--json``)."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_app.training.cv_seeds", description=__doc__.split("\n")[0]
    )
    parser.add_argument("runs", help="runs/cv/NAME,runs/cv/NAME2,... : one recipe at several seeds")
    parser.add_argument("--threshold", type=float, help="the shipped threshold (default: the first run's)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    run_dirs = [Path(p) for p in args.runs.split(",") if p]
    try:
        result = spread(run_dirs, args.threshold)
    except (OSError, ValueError, KeyError) as exc:
        sys.exit(f"cv_seeds: {exc}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    return result


if __name__ == "__main__":
    main()
