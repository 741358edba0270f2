"""Label-free cues: a cue that separates the classes is measured as such, on toy and real scans."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from lightning_app.data import cues, manifest
from lightning_app.data.stats import report


def scan(side: int, grey: int = 200) -> np.ndarray:
    """A 64 px scan with a centred square ``side`` px wide at ``grey``."""
    pixels = np.zeros((1, 64, 64), np.uint8)
    start = (64 - side) // 2
    pixels[:, start : start + side, start : start + side] = grey
    return pixels


def test_a_cue_that_orders_every_pair_scores_one_and_a_constant_scores_a_half() -> None:
    values = cues.of(np.stack([scan(42), scan(44), scan(30), scan(20)]))
    positive = np.array([True, True, False, False])
    assert [cues.auroc(v, positive) for v in values.values()] == [1.0, 1.0]
    assert values[cues.NAMES[0]][1] == pytest.approx(44 * 44 / 64**2)
    assert cues.auroc(np.ones(4), positive) == 0.5
    assert math.isnan(cues.auroc(np.ones(2), np.array([True, True])))


def test_the_table_shows_which_of_several_classes_the_brightness_gives_away() -> None:
    pixels = np.stack([scan(40, 250), scan(40, 240), scan(40, 90), scan(40, 80), scan(40, 100), scan(40, 70)])
    lines = cues.table(pixels, ["bright", "bright", "dim", "dim", "dim", "dim"])
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in lines[2:]}
    assert set(rows) == {"bright", "dim"} and rows["bright"][1] == "2" and rows["dim"][1] == "4"
    assert rows["bright"][2:4] == ["0.39", "0.50"]  # same framing: the fill tells nothing
    assert rows["bright"][5].rstrip(" |") == "1.00" and rows["dim"][5].rstrip(" |") == "0.00"


def test_stats_reads_the_framing_cue_of_real_br35h_and_skips_an_unreadable_scan(
    small_br35h: Path, tmp_path: Path
) -> None:
    """On real Br35H scans the tumour class is framed tighter: its fill AUROC is well above 0.5."""
    root = tmp_path / "data"
    shutil.copytree(small_br35h, root)
    rows = manifest.read(manifest.path_of(root))
    (root / rows[0].path).write_bytes(b"not an image")
    text = report(root)
    section = text[text.index("### Label-free cues") : text.index("### Difference")]
    line = next(s for s in section.splitlines() if s.startswith("| yes |"))
    assert int(line.split(" | ")[1]) == sum(1 for r in rows[1:] if r.label == "yes")
    assert float(line.split(" | ")[3]) > 0.6
    assert "**unreadable**: 1" in text


def test_balancing_weights_give_each_class_the_same_weight_in_every_cue_cell() -> None:
    """Bright scans are mostly tumours: weighted, a bright normal counts as much as a bright tumour."""
    greys = [250, 240] * 4 + [245, 245] + [60, 50] + [55] * 8  # within a cell the grey tells nothing
    truth = np.array([1] * 9 + [0] + [1] * 2 + [0] * 8)
    pixels = np.stack([scan(40, g) for g in greys])
    weights = cues.balancing_weights(pixels, truth, bins=2)
    bright = np.arange(20) < 10
    for cell in (bright, ~bright):
        assert weights[cell & (truth == 1)].sum() == pytest.approx(weights[cell & (truth == 0)].sum())
        assert weights[cell].sum() == pytest.approx(cell.sum())  # each cell keeps its share of draws
    assert weights[9] == pytest.approx(5.0) and weights[0] == pytest.approx(10 / 18)  # the rare one drawn 9x
    grey = cues.of(pixels)["mean grey level"]
    assert cues.auroc(grey, truth == 1) > 0.85
    drawn = np.random.default_rng(0).choice(20, size=4000, p=weights / weights.sum())
    assert abs(cues.auroc(grey[drawn], truth[drawn] == 1) - 0.5) < 0.05


def test_one_class_cells_keep_weight_one() -> None:
    pixels = np.stack([scan(40, g) for g in (10, 20, 200, 210)])
    assert cues.balancing_weights(pixels, np.array([0, 0, 1, 1]), bins=2).tolist() == [1.0] * 4
