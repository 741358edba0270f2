"""``make bench-localise``: does the heatmap sit on the head, more than an even spread would?

For every tumour scan of the TEST split and every heatmap method (``SERVE_HEATMAP``: the
backbone's CAM, LayerCAM on a finer layer, gradient x input, occlusion), the explanation of the serving
code (eager fp32) is on the scan's grid, and we measure the share of its mass inside the head mask
(Otsu foreground, filled, largest component, eroded: ``lightning_app.data.headmask.head_mask``; no
annotations needed). A heatmap spread evenly over the image scores the head's share of the
image, so the figure to beat is the median head area, and the gap between the two is what
the heatmap adds. The map's grid (cells per side) is reported too: at 4x4 a cell is a quarter
of the image wide and cannot localise much. A method can also score well for reasons that
are not the model's (gradient x input is zero on black pixels whatever the weights), so each
method is also scored on the same network with randomised weights: the control. And since a
map that only follows where the scan is bright already avoids the black background, each
row also gives a model-free reference: each cell's brightness, on the method's grid.

To choose between recipes, never read the test split: ``--cv-fold K`` explains the
out-of-fold scans of CV fold K instead (``make cv``'s split, ``--cv-folds`` of them, seed 42),
and each ``--ckpt`` must then be a checkpoint of that fold.

Results: stdout, reports/bench_localise.json and the ``bench-localise`` markers of
docs/benchmarks.md unless ``--no-doc``.

    uv run python -m benchmarks.bench_localise --ckpt runs/.../best-*.ckpt [--ckpt ...] [--method cam ...]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.docsection import publish
from lightning_app.data import manifest
from lightning_app.data.folds import cv_view
from lightning_app.data.headmask import head_mask
from lightning_app.data.manifest import Row
from lightning_app.export.build import export
from lightning_app.inference.engine import InferenceEngine
from lightning_app.inference.explain import Explainer, to_grid
from lightning_app.inference.taps import HEATMAP_METHODS
from lightning_app.training.evaluation import bootstrap

REPO = Path(__file__).resolve().parents[1]
BATCH = 32


def mass_inside(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of the (non-negative) heatmap's mass inside ``mask``; NaN for an all-zero map."""
    heat = np.clip(heat.astype(np.float64), 0, None)
    total = heat.sum()
    return float(heat[mask].sum() / total) if total > 0 else float("nan")


def randomised(net: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """A copy of ``net`` with every layer re-initialised (Adebayo et al. 2018's model randomisation)."""
    out = copy.deepcopy(net)
    torch.manual_seed(seed)
    for module in out.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()  # type: ignore[operator]
    return out


def brightness(pixels: np.ndarray, masks: np.ndarray, cells: int) -> list[float]:
    """Mass inside the head of a model-free map: each cell's brightness, on the method's grid.

    What occluding every cell of a "network" whose score is the scan's total brightness would
    give; a map that merely follows where the scan is bright scores this.
    """
    size = pixels.shape[-1]
    if size % cells:
        return [float("nan")] * len(pixels)
    raw = pixels[:, 0].astype(np.float64).reshape(len(pixels), cells, size // cells, cells, size // cells)
    maps, _ = to_grid(raw.sum(axis=(2, 4)), size)
    return [mass_inside(h, m) for h, m in zip(maps, masks, strict=True)]


def scores(explainer: Explainer, pixels: np.ndarray, masks: np.ndarray) -> tuple[list[float], int]:
    """Mass inside the head of each scan's heatmap (batches of :data:`BATCH`), and the map's cells."""
    inside: list[float] = []
    cells = 0
    for start in range(0, len(pixels), BATCH):
        explained = explainer.explain(pixels[start : start + BATCH])
        inside += [
            mass_inside(h, m) for h, m in zip(explained.maps, masks[start : start + BATCH], strict=True)
        ]
        cells = explained.cells
    return inside, cells


def median_ci(values: list[float], groups: list[str], resamples: int = 1000) -> tuple[float, float]:
    """95 % percentile interval of the median, resampling the test split's near-duplicate groups."""
    ci = bootstrap(torch.tensor(values)[:, None], torch.zeros(len(values)), groups, n_resamples=resamples,
                   statistic=lambda v, _t: {"median": float(v.median())})  # fmt: skip
    return ci["median"]["low"], ci["median"]["high"]


def localise(
    engine: InferenceEngine, rows: list[Row], data: Path, method: str, layer: str | None = None
) -> dict[str, Any]:
    """Median mass inside the head (and its CI), the head's area, and the randomised-weights control.

    ``layer``: LayerCAM's layer where it is not the served default (``--layer``).
    """
    pixels = np.stack([engine.decode((data / r.path).read_bytes()) for r in rows])
    masks = np.stack([head_mask(p[0], erode=3) for p in pixels])
    explainer = Explainer(engine, method=method, layer=layer)
    inside, cells = scores(explainer, pixels, masks)
    net = engine.backend.net  # type: ignore[attr-defined]  # the eager backend's network
    control, _ = scores(Explainer(engine, net=randomised(net), method=method, layer=layer), pixels, masks)
    kept = [i for i, v in enumerate(inside) if v == v]  # skip blank maps (NaN)
    mass, area = [inside[i] for i in kept], [float(masks[i].mean()) for i in kept]
    gaps = [m - a for m, a in zip(mass, area, strict=True)]
    low, high = median_ci(mass, [rows[i].group for i in kept])
    return {
        "method": method,
        "layer": explainer.layer,
        "scans": len(mass),
        "median_mass_inside": statistics.median(mass),
        "ci_low": low,
        "ci_high": high,
        "median_head_area": statistics.median(area),
        "median_gap": statistics.median(gaps),
        "share_above_area": sum(g > 0 for g in gaps) / len(gaps),
        "median_mass_randomised": float(np.nanmedian(control)),
        "median_mass_brightness": float(np.nanmedian(brightness(pixels, masks, cells))),
        "cells": cells,
    }


def scans_of(data: Path, label: str | None, cv_folds: int, cv_fold: int | None) -> tuple[list[Row], str]:
    """The scans of class folder ``label`` (``None``: every class), and what they are, in words.

    The test split, or with ``cv_fold`` the out-of-fold scans of that CV fold (the checkpoint
    must be the fold's: it never saw them).
    """
    rows = manifest.read(manifest.path_of(data))
    if cv_fold is None:
        return [r for r in rows if r.split == "test" and label in (None, r.label)], "the test split"
    view = cv_view(rows, cv_folds, cv_fold)
    held_out = [r for r in view if r.split == "test" and label in (None, r.label)]
    return held_out, f"CV fold {cv_fold} of {cv_folds} (out of fold; the test split unread)"


def table(rows: list[dict[str, Any]], command: str, scans: str = "the test split") -> str:
    """The markdown section: one row per checkpoint and heatmap method."""
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, torch {torch.__version__}"
    return "\n".join([
        f"`{command}` — {when}; {rows[0]['scans']} tumour scans of {scans}; head mask: Otsu "
        "foreground, filled, largest component, eroded 3 px; 95 % CI: 1,000 resamples of the "
        "near-duplicate groups; randomised: the same method on the network with every layer "
        "re-initialised (what the map owes to the image rather than the model); brightness: a "
        "model-free map of each cell's brightness on the same grid.",
        "",
        "| backbone | px | method | layer | cells | mass inside the head (median, 95 % CI) "
        "| head area (median) | gap (median) | scans with mass > area | randomised weights (median) "
        "| brightness (median) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['backbone']} | {r['image_size']} | {r['method']} | {r['layer']} "
            f"| {r['cells']}x{r['cells']} "
            f"| {r['median_mass_inside']:.2f} ({r['ci_low']:.2f}-{r['ci_high']:.2f}) "
            f"| {r['median_head_area']:.2f} | {r['median_gap']:+.2f} | {r['share_above_area']:.0%} "
            f"| {r['median_mass_randomised']:.2f} | {r['median_mass_brightness']:.2f} |"
            for r in rows
        ),
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Measure every ``--ckpt`` x ``--method`` on the chosen tumour scans; print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", type=Path, action="append", required=True, help="repeatable")
    parser.add_argument(
        "--method", action="append", choices=HEATMAP_METHODS, help="repeatable (default: all)"
    )
    parser.add_argument(
        "--layer", action="append", help="layer-cam at this layer (repeatable; default: the served one)"
    )
    parser.add_argument("--data", type=Path, default=REPO / "data" / "br35h")
    parser.add_argument("--label", default="yes", help="class folder of the scans to explain")
    parser.add_argument(
        "--cv-fold", type=int, help="explain this CV fold's out-of-fold scans, not the test split"
    )
    parser.add_argument("--cv-folds", type=int, default=5, help="k of the CV split (with --cv-fold)")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args(argv)
    methods = args.method or list(HEATMAP_METHODS)
    scans, which = scans_of(args.data, args.label, args.cv_folds, args.cv_fold)
    rows = []
    for ckpt in args.ckpt:
        with tempfile.TemporaryDirectory(prefix="bench-localise-") as tmp:
            meta = export(ckpt, Path(tmp), steps=[]).metadata  # eager fp32: the network's own weights
            engine = InferenceEngine(Path(tmp))
            for method in methods:
                for layer in args.layer if method == "layer-cam" and args.layer else [None]:
                    result = localise(engine, scans, args.data, method, layer)
                    rows.append({"checkpoint": str(ckpt), "backbone": meta["backbone"],
                                 "image_size": meta["preprocessing"]["image_size"], **result})  # fmt: skip
                    print(rows[-1], flush=True)
    command = "python -m benchmarks.bench_localise " + " ".join(f"--ckpt {c}" for c in args.ckpt)
    command += "".join(f" --method {m}" for m in args.method or [])
    command += "".join(f" --layer {m}" for m in args.layer or [])
    command += f" --cv-fold {args.cv_fold}" if args.cv_fold is not None else ""
    text = table(rows, command, which)
    publish("bench-localise", {"rows": rows}, text, doc=not args.no_doc)


if __name__ == "__main__":  # pragma: no cover
    main()
