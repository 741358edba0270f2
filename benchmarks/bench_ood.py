"""``make bench-ood``: how well the OOD guard separates held-out MRIs from everything else.

Exports the checkpoint with its training data (the export step fits the guard on the
train split and sets the threshold on the validation split), then scores, through the
serving code (:class:`InferenceEngine`, THE decoder):

* in-distribution: the held-out TEST split of the prepared data (never trained on, never
  used for the threshold),
* out-of-distribution: real non-MRI images shipped inside PyPI packages
  (``benchmarks/ood_sets.py``) and corruptions of the test scans (heavy noise, inverted,
  rotated 90 degrees, a crop of the skull's edge).

Two scores are compared at the same rule (threshold = the 99 % quantile of validation):
the shipped Mahalanobis distance on penultimate features, and the energy score of the logits.
Results: a markdown table (stdout, and between the ``bench-ood`` markers of
docs/benchmarks.md unless ``--no-doc``) and reports/bench_ood.json.

    uv run python benchmarks/bench_ood.py [--ckpt runs/.../best-*.ckpt] [--data data/br35h]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.docsection import write_section  # noqa: E402
from benchmarks.ood_sets import image_sets  # noqa: E402
from lightning_app.data.pixels import split_pixels  # noqa: E402
from lightning_app.export import export, newest_best_checkpoint  # noqa: E402
from lightning_app.export_ood import CORRUPTIONS  # noqa: E402
from lightning_app.inference.engine import InferenceEngine  # noqa: E402
from lightning_app.inference.ood import energy, threshold_for  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a proportion ``k / n``."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def scores(engine: InferenceEngine, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Mahalanobis, energy) scores of ``uint8 [N, 1, S, S]``."""
    assert engine.ood is not None
    parts = [engine.forward(pixels[i : i + 64]) for i in range(0, len(pixels), 64)]
    features = torch.cat([p.features for p in parts])
    logits = torch.cat([p.logits for p in parts])
    return engine.ood.scores(features), energy(logits)


def rate(flags: torch.Tensor) -> dict[str, Any]:
    k, n = int(flags.sum()), len(flags)
    low, high = wilson(k, n)
    return {"flagged": k, "n": n, "rate": k / n if n else math.nan, "ci95": [low, high]}


def cell(r: dict[str, Any]) -> str:
    return f"{r['flagged']}/{r['n']} = {r['rate']:.1%} [{r['ci95'][0]:.0%}, {r['ci95'][1]:.0%}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", type=Path, help="default: the newest best-*.ckpt under runs/")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "br35h")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args()
    args.ckpt = args.ckpt or newest_best_checkpoint(REPO / "runs")
    work = Path(tempfile.mkdtemp(prefix="bench-ood-"))
    exported = export(args.ckpt, work / "model", data_dir=args.data)
    engine = InferenceEngine(work / "model")
    assert engine.ood is not None
    size = engine.preprocessing.image_size
    val, _ = split_pixels(args.data, "val", image_size=size)
    test, _ = split_pixels(args.data, "test", image_size=size)
    val_maha, val_energy = scores(engine, val)
    thresholds = {"mahalanobis": engine.ood.threshold, "energy": threshold_for(val_energy)}
    assert abs(threshold_for(val_maha) - thresholds["mahalanobis"]) < 1e-6 * max(
        1.0, thresholds["mahalanobis"]
    )
    sets: dict[str, torch.Tensor] = {"held-out Br35H test split (in-distribution)": test}
    for name, corrupt in CORRUPTIONS.items():
        sets[f"test scans, {name.replace('_', ' ')}"] = corrupt(test)
    non_mri: dict[str, torch.Tensor] = {}
    for name, images in image_sets().items():
        non_mri[name.replace("_", " ")] = torch.stack([engine.decode(data) for _, data in images])
    sets.update(non_mri)
    sets["all non-MRI images"] = torch.cat(list(non_mri.values()))
    results: dict[str, dict[str, Any]] = {}
    for name, pixels in sets.items():
        maha, en = scores(engine, pixels)
        results[name] = {
            "mahalanobis": rate(maha > thresholds["mahalanobis"]),
            "energy": rate(en > thresholds["energy"]),
        }
    meta = exported.metadata
    ood = meta["ood"]
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    lines = [
        f"`make bench-ood CKPT={args.ckpt}` — {when}; model {meta['backbone']} at {size} px, checkpoint "
        f"`{meta['checkpoint']}` (version {meta['version']}); guard fitted on the train split "
        f"({ood['n']['train']} scans), threshold = 99 % quantile of the validation split ({ood['n']['val']} "
        f"scans): Mahalanobis {thresholds['mahalanobis']:.2f} (Ledoit-Wolf shrinkage "
        f"{ood['shrinkage']:.3f}), energy {thresholds['energy']:.3f}.",
        "",
        "| set | flagged, Mahalanobis (shipped) [95 % CI] | flagged, energy [95 % CI] |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {cell(r['mahalanobis'])} | {cell(r['energy'])} |" for name, r in results.items()]
    lines += [
        "",
        "For the held-out row, flagged = false positive rate (goal <= 1 %); for every other row,"
        " flagged = true positive rate (goal >= 95 % of non-MRI images).",
    ]
    table = "\n".join(lines)
    print(table)
    (REPO / "reports").mkdir(exist_ok=True)
    report = {
        "checkpoint": str(args.ckpt),
        "thresholds": thresholds,
        "results": results,
        "export": meta["ood"],
    }
    (REPO / "reports" / "bench_ood.json").write_text(json.dumps(report, indent=2))
    if not args.no_doc:
        write_section("bench-ood", table, DOC)
        print(f"written to {DOC}")


if __name__ == "__main__":
    main()
