"""The model card's failure statistics: what the misclassified test images have in common."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from statistics import median
from typing import Any

from PIL import Image

from lightning_app.data import manifest


def _header(path: Path) -> tuple[int, int, str, str] | None:
    try:
        with Image.open(path) as image:
            return image.size[0], image.size[1], image.mode, image.format or "?"
    except OSError:
        return None


def failure_stats(metrics: dict[str, Any], data_dir: Path, rows: list[manifest.Row]) -> list[str]:
    """What the misclassified test images have in common (sizes, modes, groups, confidence)."""
    if "misclassified" not in metrics:
        return ["This run's metrics.json predates the list of misclassified images: re-run `make fit`."]
    wrong = metrics["misclassified"]
    if not wrong:
        return ["No test image was misclassified."]
    group_size = Counter(r.group for r in rows)
    test = manifest.rows_of(rows, "test")
    headers = {r.path: _header(data_dir / r.path) for r in test}
    widths_all = [h[0] for h in headers.values() if h]
    widths_wrong = [h[0] for w in wrong if (h := headers.get(w["path"]))]
    modes = Counter(h[2] for w in wrong if (h := headers.get(w["path"])))
    kinds = Counter(f"{w['true']} → {w['predicted']}" for w in wrong)
    conf = [w["confidence"] for w in wrong]
    groups = Counter(w["group"] for w in wrong)
    lines = [
        f"- {len(wrong)} of {len(test)} test images misclassified: "
        + ", ".join(f"{n} {k}" for k, n in kinds.most_common())
        + ".",
        f"- They come from {len(groups)} near-duplicate groups (largest share: {groups.most_common(1)[0][1]} "
        f"images of one group); the groups they belong to have a median of "
        f"{median(group_size[g] for g in groups):.0f} images in the data set.",
        f"- Calibrated confidence of the wrong answers: median {median(conf):.2f}, "
        f"{sum(c >= 0.9 for c in conf)} of {len(conf)} at ≥ 0.90 (confidently wrong).",
    ]
    if widths_wrong and widths_all:
        lines.append(
            f"- Image width: median {median(widths_wrong):.0f} px for the misclassified vs "
            f"{median(widths_all):.0f} px for all test images; modes {dict(modes)}."
        )
    lines.append("- Files: " + ", ".join(f"`{w['path']}` ({w['confidence']:.2f})" for w in wrong[:30]))
    return lines
