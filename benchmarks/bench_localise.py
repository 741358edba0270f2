"""``make bench-localise``: does the heatmap sit on the head, more than an even spread would?

For every tumour scan of the TEST split, the served explanation (CAM, through the serving
code) is resized to the scan, and we measure the share of its mass inside the head mask
(Otsu foreground, filled, largest component, eroded: ``bench_explain.brain_mask``; no
annotations needed). A heatmap spread evenly over the image scores the head's share of the
image, so the figure to beat is the median head area, and the gap between the two is what
the heatmap adds. The CAM grid (cells per side) is reported too: at 4x4 a cell is a quarter
of the image wide and cannot localise much.

Results: stdout, reports/bench_localise.json and the ``bench-localise`` markers of
docs/benchmarks.md unless ``--no-doc``.

    uv run python -m benchmarks.bench_localise --ckpt runs/.../best-*.ckpt [--ckpt ...] [--data data/br35h]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.bench_explain import brain_mask, held_out
from benchmarks.docsection import save_report, write_section
from lightning_app.export.build import export
from lightning_app.inference.engine import InferenceEngine
from lightning_app.inference.explain import Explainer

REPO = Path(__file__).resolve().parents[1]


def mass_inside(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of the (non-negative) heatmap's mass inside ``mask``; NaN for an all-zero map."""
    heat = np.clip(heat.astype(np.float64), 0, None)
    total = heat.sum()
    return float(heat[mask].sum() / total) if total > 0 else float("nan")


def localise(engine: InferenceEngine, files: list[Path]) -> dict[str, Any]:
    """Median heatmap mass inside the head, median head share, and their per-scan gap."""
    explainer = Explainer(engine)
    inside, area, cells = [], [], 0
    for path in files:
        pixels = engine.decode(path.read_bytes())
        explained = explainer.explain(pixels[None])
        heat = explained.maps[0].numpy()
        mask = brain_mask(pixels[0].numpy())
        share = mass_inside(heat, mask)
        if share == share:  # skip blank maps (NaN)
            inside.append(share)
            area.append(float(mask.mean()))
        if explained.forward.cam is not None:  # the class-activation layer's grid
            cells = int(explained.forward.cam.shape[-1])
    gaps = [i - a for i, a in zip(inside, area, strict=True)]
    return {
        "scans": len(inside),
        "median_mass_inside": statistics.median(inside),
        "median_head_area": statistics.median(area),
        "median_gap": statistics.median(gaps),
        "share_above_area": sum(g > 0 for g in gaps) / len(gaps),
        "cells": cells,
    }


def main(argv: list[str] | None = None) -> None:
    """Measure every ``--ckpt`` on the test split's tumour scans; print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", type=Path, action="append", required=True, help="repeatable")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "br35h")
    parser.add_argument("--label", default="yes", help="class folder of the scans to explain")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args(argv)
    files = held_out(args.data, args.label)
    rows = []
    for ckpt in args.ckpt:
        with tempfile.TemporaryDirectory(prefix="bench-localise-") as tmp:
            meta = export(ckpt, Path(tmp), steps=[]).metadata  # eager fp32: the CAM of the weights
            result = localise(InferenceEngine(Path(tmp)), files)
        rows.append({"checkpoint": str(ckpt), "backbone": meta["backbone"],
                     "image_size": meta["preprocessing"]["image_size"], **result})  # fmt: skip
        print(rows[-1], flush=True)
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, torch {torch.__version__}"
    command = "python -m benchmarks.bench_localise " + " ".join(f"--ckpt {c}" for c in args.ckpt)
    lines = [
        f"`{command}` — {when}; {rows[0]['scans']} tumour scans of the test split; head mask: Otsu "
        "foreground, filled, largest component, eroded 3 px.",
        "",
        "| backbone | px | CAM cells | heatmap mass inside the head (median) | head area (median) "
        "| gap (median) | scans with mass > area |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['backbone']} | {r['image_size']} | {r['cells']}x{r['cells']} "
            f"| {r['median_mass_inside']:.2f} | {r['median_head_area']:.2f} | {r['median_gap']:+.2f} "
            f"| {r['share_above_area']:.0%} |"
            for r in rows
        ),
    ]
    save_report("bench_localise", {"rows": rows})
    if not args.no_doc:
        write_section("bench-localise", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":  # pragma: no cover
    main()
