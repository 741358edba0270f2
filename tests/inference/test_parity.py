"""The parity bounds both the export and the promotion gate judge with (torch-free)."""

from lightning_app.inference.parity import ParityBounds

CASCADE = {"agreement": 0.992, "accuracy_drop": 0.001, "decision_agreement": 0.996}


def test_a_record_within_its_bounds_passes_and_each_breach_is_named() -> None:
    loose = ParityBounds(min_agreement=0.99)
    assert loose.violations(CASCADE) == []
    assert ParityBounds().violations(CASCADE) == ["top-1 agreement 99.20% < 99.50%"]
    worse = {**CASCADE, "accuracy_drop": 0.004, "decision_agreement": 0.98}
    assert loose.violations(worse) == [
        "accuracy drop 0.40 points > 0.25",
        "screening decisions agree on 98.00% < 99.00%",
    ]


def test_recorded_bounds_are_read_back_and_missing_ones_fall_back_to_the_defaults() -> None:
    assert ParityBounds.from_dict({}) == ParityBounds()
    recorded = ParityBounds.from_dict({"min_agreement": 0.99})
    assert recorded == ParityBounds(min_agreement=0.99, max_accuracy_drop=0.0025)
    assert recorded.violations(CASCADE) == []
