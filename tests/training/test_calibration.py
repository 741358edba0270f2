"""Temperature scaling and confidence intervals of a real (small) training run through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lightning_app.export import build as export


@pytest.mark.slow
def test_temperature_lowers_validation_nll_and_travels_to_the_export(
    trained_run: Path, trained_checkpoint: Path, tmp_path: Path
) -> None:
    metrics = json.loads((trained_run / "metrics.json").read_text())
    calibration = metrics["calibration"]
    assert calibration["val_nll_after"] < calibration["val_nll_before"]  # what the fit minimises
    assert calibration["ece_bins"] == 15
    assert {"test_ece_before", "test_ece_after", "val_ece_before", "val_ece_after"} <= set(calibration)
    temperature = calibration["temperature"]
    assert temperature != 1.0
    state = torch.load(trained_checkpoint, map_location="cpu", weights_only=False)
    assert float(state["state_dict"]["temperature"]) == pytest.approx(temperature)
    meta = json.loads(export.export(trained_checkpoint, tmp_path / "out", steps=[]).meta.read_text())
    assert meta["temperature"] == pytest.approx(temperature)


@pytest.mark.slow
def test_metrics_json_has_group_bootstrap_intervals_and_figures(trained_run: Path) -> None:
    metrics = json.loads((trained_run / "metrics.json").read_text())
    ci = metrics["confidence_intervals"]
    assert "near-duplicate groups" in ci["method"] and ci["level"] == 0.95
    assert ci["n_images"] == sum(map(sum, metrics["confusion_matrix"]))
    assert 0 < ci["n_groups"] <= ci["n_images"]
    assert ci["accuracy"]["value"] == pytest.approx(metrics["metrics"]["test/acc"], abs=1e-6)
    for block in (
        ci["accuracy"],
        ci["auroc"],
        *(r for c in metrics["per_class"].values() for r in c.values()),
    ):
        assert block["low"] <= block["value"] <= block["high"]
        assert not math.isnan(block["value"])
    assert set(metrics["per_class"]) == {"no_tumor", "tumor"}
    assert set(metrics["per_class"]["tumor"]) == {"sensitivity", "specificity", "ppv", "npv"}
    tumour = metrics["per_class"]["tumor"]["sensitivity"]["value"]
    (_, _), (fn, tp) = metrics["confusion_matrix"]
    assert tumour == pytest.approx(tp / (tp + fn), abs=1e-6)
    (_, fp), _ = metrics["confusion_matrix"]
    assert len(metrics["misclassified"]) == fp + fn
    assert all(m["true"] != m["predicted"] for m in metrics["misclassified"])
    for name in ("reliability_diagram.png", "roc_curve.png", "confusion_matrix.png"):
        assert (trained_run / name).read_bytes()[:4] == b"\x89PNG"


def test_the_operating_point_follows_the_model_settings() -> None:
    from types import SimpleNamespace

    from lightning_app.training.calibration import operating_point

    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8], [0.7, 0.3]])
    targets = torch.tensor([0, 1, 1, 1, 0])
    model = SimpleNamespace(class_names=["no_tumor", "tumor"], hparams={"target_sensitivity": 1.0})
    chosen = operating_point(model, probs, targets)
    assert chosen is not None and chosen["threshold"] == pytest.approx(0.4) and chosen["sensitivity"] == 1.0
    model.hparams |= {"operating_threshold": 0.75, "operating_source": "out-of-fold (make cv)"}
    fixed = operating_point(model, probs, targets)
    assert fixed is not None and fixed["threshold"] == 0.75 and fixed["chosen_on"] == "out-of-fold (make cv)"
    assert fixed["sensitivity"] == pytest.approx(1 / 3)  # measured on these scans, not re-chosen
    model.hparams = {"negative_class": None}
    assert operating_point(model, probs, targets) is None
