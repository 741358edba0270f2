"""``bench_shortcut --probe framing``: a model that reads how much of the frame the head fills is caught."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from benchmarks import bench_shortcut as bs


class FramingReader:
    """A stand-in model that calls "tumor" when bright pixels fill over 40 % of the frame."""

    class_names = ["no_tumor", "tumor"]

    def forward(self, pixels: np.ndarray) -> SimpleNamespace:
        filled = (pixels > 50).mean(axis=(1, 2, 3))
        return SimpleNamespace(logits=np.stack([0.4 - filled, filled - 0.4], axis=1))

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return logits  # argmax is all the benchmark reads


def scan(side: int) -> np.ndarray:
    """A 64 px scan with a bright centred square ``side`` px wide."""
    pixels = np.zeros((1, 64, 64), np.uint8)
    start = (64 - side) // 2
    pixels[:, start : start + side, start : start + side] = 200
    return pixels


def test_zoom_shrinks_or_crops_about_the_centre_and_gain_clips() -> None:
    full = torch.full((1, 64, 64), 200, dtype=torch.uint8)
    out = bs.zoom(0.9)(full)
    assert out[0, 0, 0] == 0 and out[0, 32, 32] == 200  # a black border, the centre kept
    assert bs.zoom(1.1)(torch.from_numpy(scan(40)))[0].gt(50).float().mean() > (40 / 64) ** 2
    assert bs.gain(1.5)(full).max() == 255 and bs.gain(0.5)(full).max() == 100


def test_the_framing_probe_flips_a_framing_reader_and_not_the_background_probe() -> None:
    pixels = np.stack([scan(42), scan(42), scan(38), scan(38)])  # fills 43 % / 35 % of the frame
    truth = np.array([1, 1, 0, 0])
    rows = {r["variant"]: r for r in bs.shortcut(FramingReader(), pixels, truth, probe="framing")}
    assert rows["as is"]["accuracy"] == 1.0
    assert rows["zoomed out 10 %"]["recall"]["tumor"] == 0.0 and rows["zoomed out 10 %"]["changed"] == 2
    assert rows["zoomed in 10 %"]["recall"]["no_tumor"] == 0.0
    assert rows["10 % darker"]["changed"] == 0  # 200 * 0.9 is still bright to this reader
    background = bs.shortcut(FramingReader(), pixels, truth)
    assert [r["variant"] for r in background] == ["as is", "black", "grey + noise"]
    text = bs.table([{"name": "m", **r} for r in rows.values()], "cmd", "CV fold 0", "framing")
    assert "| checkpoint | framing |" in text and "| m | zoomed out 10 % | 50.0 |" in text
