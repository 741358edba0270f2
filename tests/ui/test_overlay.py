"""The heatmap overlay and the page's rendering of the OOD verdict (numpy + Pillow, no browser)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from lightning_app.ui.answer import Heatmap, InDistribution, Prediction
from lightning_app.ui.app import example_scans, render_prediction, render_warning
from lightning_app.ui.overlay import DISPLAY_SIZE, colourise, overlay


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def spread(picture: np.ndarray) -> np.ndarray:
    return picture.max(axis=2).astype(int) - picture.min(axis=2).astype(int)


def test_colour_ramp_runs_from_blue_to_red() -> None:
    ramp = colourise(np.array([[0.0, 1.0]]))
    assert ramp[0, 0].tolist() == [0.0, 0.0, 0.5] and ramp[0, 1].tolist() == [0.5, 0.0, 0.0]


def test_heat_is_drawn_where_the_map_is_hot_and_only_when_shown() -> None:
    scan = example_scans()[0]
    heat = np.zeros((64, 64))
    heat[:, 48:] = 255  # hot right quarter
    shown = overlay(scan, png(heat), show=True, opacity=0.8)
    hidden = overlay(scan, png(heat), show=False, opacity=0.8)
    assert shown is not None and hidden is not None
    assert max(shown.shape[:2]) == DISPLAY_SIZE and shown.shape == hidden.shape
    assert spread(hidden).max() == 0, "no heatmap: the scan in gray"
    width = shown.shape[1]
    assert spread(shown)[:, int(width * 0.8) :].mean() > 50, "hot quarter coloured"
    assert spread(shown)[:, : int(width * 0.6)].max() == 0, "cold part left as the scan"
    faint = overlay(scan, png(heat), show=True, opacity=0.2)
    assert (
        faint is not None
        and spread(faint)[:, int(width * 0.8) :].mean() < spread(shown)[:, int(width * 0.8) :].mean()
    )


def test_unreadable_scan_gives_no_picture() -> None:
    assert overlay(b"not an image", None) is None


def prediction(ok: bool | None, heatmap: bool = True) -> Prediction:
    return Prediction(
        label="tumor",
        probabilities={"tumor": 0.7, "no_tumor": 0.3},
        model_name="brain_mri",
        model_version="abc",
        latency_ms=12.0,
        in_distribution=None if ok is None else InDistribution(ok=ok, score=30.0, threshold=20.0),
        warning=None if ok in (None, True) else "This image does not look like the brain MRIs <b>",
        heatmap=Heatmap(png=b"\x89PNG", target="tumor", method="cam") if heatmap else None,
    )


def test_warning_banner_only_when_flagged_and_escaped() -> None:
    assert render_warning(prediction(True))["visible"] is False
    assert render_warning(prediction(None))["visible"] is False
    assert render_warning(None)["visible"] is False
    flagged = render_warning(prediction(False))
    assert flagged["visible"] is True and 'role="alert"' in flagged["value"]
    assert "&lt;b&gt;" in flagged["value"] and "<b>" not in flagged["value"]


def test_result_names_the_verdict_and_the_heatmap_class() -> None:
    text = render_prediction(prediction(False))
    assert "unlike the training scans" in text and "score 30.0 (threshold 20.0)" in text
    assert "CAM for class **tumor**" in text and "calibrated probability" in text
    assert "like the training scans" in render_prediction(prediction(True, heatmap=False))
    assert "Heatmap" not in render_prediction(prediction(None, heatmap=False))
