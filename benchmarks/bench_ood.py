"""``make bench-ood``: how well the OOD guard separates held-out MRIs from everything else.

Exports the checkpoint with its training data (the export step fits the guard on the
train split and sets the threshold on the validation split), then scores, through the
serving code (:class:`InferenceEngine`, THE decoder):

* in-distribution: the held-out TEST split of the prepared data (never trained on, never
  used for the threshold),
* out-of-distribution: real non-MRI images shipped inside PyPI packages
  (``benchmarks/ood_sets.py``) and corruptions of the test scans (heavy noise, inverted,
  rotated 90 degrees, a crop of the skull's edge);
* the proxy the combination rule was chosen on (never the non-MRI sets): the same
  corruptions of the VALIDATION scans.

Three scores are compared at the same rule (threshold = the 99 % quantile of validation):
the shipped guard (Mahalanobis feature ensemble over the stages, ``inference/ood.py``), the
previous guard (one Mahalanobis distance on the penultimate features, fitted here on the
same backend's train features), and the energy score of the logits. The first column is
what ships: the ensemble's flag or the colour check's (``inference/colour.py``; corrupted
scans are grey).
Results: a markdown table (stdout, and between the ``bench-ood`` markers of
docs/benchmarks.md unless ``--no-doc``) and reports/bench_ood.json. With several ``--ckpt``
(seeds, folds), each model's table and then one line per model (the two goals side by side and
the non-MRI files that pass): the guard's spread over training draws, in
reports/bench_ood_spread.json; the doc is not written.

    uv run python -m benchmarks.bench_ood [--ckpt runs/.../best-*.ckpt ...] [--data data/br35h]
"""

from __future__ import annotations

import argparse
import math
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.docsection import save_report, write_section
from benchmarks.ood_sets import image_sets
from lightning_app.data import manifest
from lightning_app.data.pixels import split_pixels
from lightning_app.export.build import export, newest_best_checkpoint
from lightning_app.export.ood import CORRUPTIONS
from lightning_app.inference.colour import colour_of
from lightning_app.inference.engine import InferenceEngine
from lightning_app.inference.ood import KEEP, OODGuard, energy, threshold_for

REPO = Path(__file__).resolve().parents[1]

DOC = REPO / "docs" / "benchmarks.md"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a proportion ``k / n``."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def forwards(engine: InferenceEngine, pixels: torch.Tensor) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(feature sources, logits) of ``uint8 [N, 1, S, S]`` through the served backend."""
    parts = [engine.forward(pixels[i : i + 64]) for i in range(0, len(pixels), 64)]
    sources = {name: np.concatenate([p.sources()[name] for p in parts]) for name in parts[0].sources()}
    return sources, np.concatenate([p.logits for p in parts])


SCORES = ("ensemble", "penultimate", "energy")


def scores(engine: InferenceEngine, penultimate: OODGuard, pixels: torch.Tensor) -> dict[str, np.ndarray]:
    """The shipped guard's, the penultimate-only guard's and the energy scores of ``pixels``."""
    assert engine.ood is not None
    sources, logits = forwards(engine, pixels)
    return {
        "ensemble": engine.ood.scores(sources),
        "penultimate": penultimate.scores(sources),
        "energy": energy(logits),
    }


def rate(flags: np.ndarray) -> dict[str, Any]:
    k, n = int(flags.sum()), len(flags)
    low, high = wilson(k, n)
    return {"flagged": k, "n": n, "rate": k / n if n else math.nan, "ci95": [low, high]}


def cell(r: dict[str, Any]) -> str:
    return f"{r['flagged']}/{r['n']} = {r['rate']:.1%} [{r['ci95'][0]:.0%}, {r['ci95'][1]:.0%}]"


HELD_OUT = "held-out Br35H test split (in-distribution)"
NO_FACES = "non-MRI files, LFW faces left out (the earlier check set + 8 new files)"


def measure(ckpt: Path, data: Path) -> tuple[str, dict[str, Any], list[str]]:
    """One checkpoint: (its markdown table, its report, the non-MRI files its guard lets pass)."""
    work = Path(tempfile.mkdtemp(prefix="bench-ood-"))
    exported = export(ckpt, work / "model", data_dir=data)
    engine = InferenceEngine(work / "model")
    assert engine.ood is not None
    size = engine.preprocessing.image_size
    train, train_labels = split_pixels(data, "train", image_size=size)
    val, _ = split_pixels(data, "val", image_size=size)
    test, _ = split_pixels(data, "test", image_size=size)
    val_sources, _ = forwards(engine, val)
    penultimate = OODGuard.fit(
        forwards(engine, train)[0], train_labels, len(engine.class_names), names=["features"]
    ).calibrated(val_sources)
    val_scores = scores(engine, penultimate, val)
    keep = float(exported.metadata["ood"]["keep"])  # the shipped guard's, chosen at export
    thresholds = {
        name: threshold_for(val_scores[name], keep if name == "ensemble" else KEEP) for name in SCORES
    }
    assert abs(thresholds["ensemble"] - engine.ood.threshold) < 1e-6 * max(1.0, abs(engine.ood.threshold))
    sets: dict[str, torch.Tensor] = {HELD_OUT: test}
    test_files = [data / row.path for row in manifest.split_rows(data, "test")]
    colours = {HELD_OUT: np.array([colour_of(f, size) for f in test_files])}
    for name, corrupt in CORRUPTIONS.items():
        sets[f"test scans, {name.replace('_', ' ')}"] = corrupt(test)
    non_mri: dict[str, torch.Tensor] = {}
    files: list[str] = []
    for name, images in image_sets().items():
        read = [engine.read(data) for _, data in images]
        non_mri[name.replace("_", " ")] = torch.from_numpy(np.stack([px for px, _ in read]))
        colours[name.replace("_", " ")] = np.array([c for _, c in read])
        files += [] if name.startswith("faces_lfw") else [label for label, _ in images]
    sets.update(non_mri)
    sets["all non-MRI images"] = torch.cat(list(non_mri.values()))
    colours["all non-MRI images"] = np.concatenate([colours[name] for name in non_mri])
    no_faces = [name for name in non_mri if not name.startswith("faces lfw")]
    sets[NO_FACES] = torch.cat([non_mri[name] for name in no_faces])
    colours[NO_FACES] = np.concatenate([colours[name] for name in no_faces])
    limit = math.inf if engine.colour_limit is None else engine.colour_limit
    for name, corrupt in CORRUPTIONS.items():
        sets[f"proxy: validation scans, {name.replace('_', ' ')}"] = corrupt(val)
    results: dict[str, dict[str, Any]] = {}
    passed: list[str] = []
    for name, pixels in sets.items():
        got = scores(engine, penultimate, pixels)
        results[name] = {score: rate(got[score] > thresholds[score]) for score in SCORES}
        coloured = colours.get(name, np.zeros(len(pixels))) > limit  # corruptions of grey scans: grey
        shipped = (got["ensemble"] > thresholds["ensemble"]) | coloured
        results[name]["shipped"] = rate(shipped)
        if name == NO_FACES:
            passed = [f for f, flagged in zip(files, shipped, strict=True) if not flagged]
    meta = exported.metadata
    ood = meta["ood"]
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    lines = [
        f"`make bench-ood CKPT={ckpt}` — {when}; model {meta['backbone']} at {size} px, checkpoint "
        f"`{meta['checkpoint']}` (version {meta['version']}); guard fitted on the train split "
        f"({ood['n']['train']} scans), thresholds from the validation split ({ood['n']['val']} scans). "
        f"Shipped guard: Mahalanobis per source ({', '.join(ood['sources'])}), each standardised on "
        f"validation, combined by {ood['combine']}, threshold {thresholds['ensemble']:.2f} = the "
        f"{keep:.1%} quantile of validation (chosen by group-wise CV on validation, flagged per candidate: "
        f"{', '.join(f'{k}: {v:.1%}' for k, v in ood['keep_group_cv_fpr'].items())}); penultimate-only "
        f"guard (the previous one, 99 % quantile) {thresholds['penultimate']:.2f}; energy (99 %) "
        f"{thresholds['energy']:.3f}. Backend: {ood['backend']}. Colour check (`inference/colour.py`): "
        f"{'off' if engine.colour_limit is None else f'mean chroma > {limit:g} grey levels'}.",
        "",
        "| set | flagged, shipped: ensemble + colour check [95 % CI] | flagged, ensemble alone [95 % CI] "
        "| flagged, penultimate only [95 % CI] | flagged, energy [95 % CI] |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {cell(r['shipped'])} | {cell(r['ensemble'])} | {cell(r['penultimate'])} "
        f"| {cell(r['energy'])} |"
        for name, r in results.items()
    ]
    lines += [
        "",
        "For the held-out row, flagged = false positive rate (goal <= 1 %); for every other row,"
        " flagged = true positive rate (goal >= 95 % of non-MRI images). The `proxy:` rows are what"
        " the combination rule was chosen on (validation scans, the threshold's own split).",
    ]
    report = {"checkpoint": str(ckpt), "thresholds": thresholds, "results": results, "export": ood}
    return "\n".join(lines), report, passed


def spread(rows: list[tuple[Path, dict[str, Any], list[str]]]) -> str:
    """One line per checkpoint: the shipped guard's two goals side by side (with its colour
    check), and what passed."""
    lines = [
        "| checkpoint | held-out MRIs flagged (goal <= 1 %) | non-MRI files flagged, no faces (goal >= 95 %) "
        "| both goals | non-MRI files that pass |",
        "|---|---|---|---|---|",
    ]
    for ckpt, report, passed in rows:
        held = report["results"][HELD_OUT]["shipped"]
        files = report["results"][NO_FACES]["shipped"]
        both = "yes" if held["rate"] <= 0.01 and files["rate"] >= 0.95 else "no"
        lines.append(f"| `{ckpt}` | {cell(held)} | {cell(files)} | {both} | {', '.join(passed) or '-'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--ckpt",
        type=Path,
        action="append",
        help="repeatable: several print a spread table, no doc (default: the newest best-*.ckpt under runs/)",
    )
    parser.add_argument("--data", type=Path, default=REPO / "data" / "br35h")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args()
    ckpts = args.ckpt or [newest_best_checkpoint(REPO / "runs")]
    rows = []
    for ckpt in ckpts:
        table, report, passed = measure(ckpt, args.data)
        print(table, flush=True)
        rows.append((ckpt, report, passed))
    if len(rows) > 1:
        print(spread(rows))
        save_report("bench_ood_spread", {"models": [r for _, r, _ in rows]})
        return
    save_report("bench_ood", rows[0][1])
    if not args.no_doc:
        write_section("bench-ood", table, DOC)


if __name__ == "__main__":
    main()
