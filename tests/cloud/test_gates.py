"""The promotion gates' verdicts on the numbers an export and a run record.

The dicts are the shapes ``model_meta.json`` (export) and ``metrics.json`` (``make fit``,
with ``make cv``'s pooled block) carry; the golden gate is exercised on real servers in
test_registry_flow.py and test_canary.py.
"""

from __future__ import annotations

import pytest

from lightning_app.cloud import gates
from lightning_app.cloud.golden import compare
from lightning_app.cloud.settings import CloudSettings, CloudSettingsError

FLOORS = gates.Floors()
INT8 = {
    "precision": "int8",
    "parity": {
        "images": 900,
        "agreement": 0.998,
        "accuracy_drop": 0.001,
        "bounds": {"min_agreement": 0.995, "max_accuracy_drop": 0.0025},
    },
}


def test_parity_gate_judges_the_recorded_int8_parity_and_passes_plain_fp32() -> None:
    assert gates.parity_gate({"backend": INT8}) == gates.Gate(
        "parity", True, "int8: top-1 agreement 99.80% on 900"
    )
    bad = {**INT8, "parity": {**INT8["parity"], "agreement": 0.99, "accuracy_drop": 0.004}}  # type: ignore[dict-item]
    verdict = gates.parity_gate({"backend": bad})
    assert not verdict.ok
    assert verdict.detail == "top-1 agreement 99.00% < 99.50%; accuracy drop 0.40 points > 0.25"
    fp32 = gates.parity_gate({"backend": {"precision": "fp32", "note": "small data"}})
    assert fp32.ok and "no artefact to judge" in fp32.detail


def test_parity_gate_judges_a_cascade_against_its_own_bounds_decisions_included() -> None:
    cascade = {
        "images": 1044,
        "agreement": 0.9971,
        "accuracy_drop": -0.001,
        "decision_agreement": 0.9971,
        "deferred": 0.199,
        "bounds": {"min_agreement": 0.99, "max_accuracy_drop": 0.0025},
    }
    verdict = gates.parity_gate({"backend": {**INT8, "cascade": {"parity": cascade}}})
    assert verdict.ok and verdict.detail.endswith(
        "cascade: top-1 agreement 99.71%, screening decisions 99.71%, 19.9% deferred"
    )
    worse = {**cascade, "decision_agreement": 0.985}
    verdict = gates.parity_gate({"backend": {**INT8, "cascade": {"parity": worse}}})
    assert not verdict.ok and verdict.detail == "cascade: screening decisions agree on 98.50% < 99.00%"


def test_quality_floor_prefers_pooled_cv_then_test() -> None:
    cv = {
        "cv": {"pooled": {"accuracy": {"value": 0.947}, "auroc": {"value": 0.98}}},
        "metrics": {"test/acc": 0.5},
    }
    assert gates.quality_gate(cv, FLOORS) == gates.Gate(
        "quality", True, "pooled CV accuracy 0.947, AUROC 0.980"
    )
    low = gates.quality_gate({"metrics": {"test/acc": 0.77, "test/auroc": 0.876}}, FLOORS)
    assert not low.ok and low.detail == "test accuracy 0.770 < 0.900; test AUROC 0.876 < 0.950"
    assert not gates.quality_gate({"metrics": {}}, FLOORS).ok


def test_ood_gate_needs_a_fitted_guard_with_low_in_distribution_rates() -> None:
    fitted = {"ood": {"fitted": True, "val_flagged": 0.05, "test_flagged": 0.04, "test_noise_flagged": 1.0}}
    assert gates.ood_gate(fitted, FLOORS) == gates.Gate("ood", True, "val_flagged 5.0%, test_flagged 4.0%")
    noisy = gates.ood_gate({"ood": {**fitted["ood"], "test_flagged": 0.3}}, FLOORS)
    assert not noisy.ok and noisy.detail == "test_flagged 30.0% > 10.0%"
    unfitted = gates.ood_gate({"ood": {"fitted": False, "reason": "too few images"}}, FLOORS)
    assert not unfitted.ok and "too few images" in unfitted.detail
    assert not gates.ood_gate({"ood": {"fitted": True}}, FLOORS).ok


def test_floors_come_from_the_settings_and_failures_read_as_one_line() -> None:
    settings = CloudSettings.from_env({"BUCKET": "b", "GATE_MIN_ACCURACY": "0.5"}, dry_run=True)
    assert gates.Floors.from_settings(settings) == gates.Floors(min_accuracy=0.5)
    with pytest.raises(CloudSettingsError, match="GATE_MIN_AUROC='high' is not a number"):
        gates.Floors.from_settings(CloudSettings.from_env({"GATE_MIN_AUROC": "high"}, dry_run=True))
    verdicts = [
        gates.Gate("parity", True, "ok"),
        gates.Gate("ood", False, "x"),
        gates.Gate("golden", False, "y"),
    ]
    assert gates.failed(verdicts) == "gate failed: ood: x | golden: y"
    assert gates.failed(verdicts[:1]) == ""


def test_golden_answers_compare_labels_and_probabilities() -> None:
    def answer(label: str, p: float) -> dict[str, object]:
        other = "no_tumor" if label == "tumor" else "tumor"
        return {
            "prediction": label,
            "probabilities": [{"label": label, "probability": p}, {"label": other, "probability": 1 - p}],
        }

    assert compare(answer("tumor", 0.9), answer("tumor", 0.9004), 1e-3) == ""
    assert compare(answer("tumor", 0.9), answer("tumor", 0.8), 1e-3) == "probability off by 0.1000 > 0.001"
    assert compare(answer("tumor", 0.9), answer("no_tumor", 0.6), 1e-3) == "'no_tumor' instead of 'tumor'"
    odd = {"prediction": "tumor", "probabilities": [{"label": "tumor", "probability": 1.0}]}
    assert compare(answer("tumor", 0.9), odd, 1e-3).startswith("labels ['tumor'] instead of")
