"""The screening operating point: chosen for a sensitivity target, applied to any class count."""

from __future__ import annotations

import random

import pytest

from lightning_app.models.screening import OperatingPoint, choose, rates, scores

NAMES = ["no_tumor", "tumor"]


def two_class(n: int, seed: int) -> tuple[list[list[float]], list[int]]:
    """Noisy scores: tumours tend to score high, but the classes overlap."""
    rng = random.Random(seed)
    probs, targets = [], []
    for i in range(n):
        target = i % 2
        p_tumour = min(1.0, max(0.0, rng.gauss(0.65 if target else 0.35, 0.2)))
        probs.append([1 - p_tumour, p_tumour])
        targets.append(target)
    return probs, targets


@pytest.mark.parametrize("target", [0.9, 0.97, 1.0])
def test_threshold_reaches_the_target_sensitivity_and_is_the_highest_that_does(target: float) -> None:
    probs, targets = two_class(400, seed=1)
    point = choose(probs, targets, NAMES, target_sensitivity=target)
    assert point is not None
    scored, positive = scores(probs, 0), [t == 1 for t in targets]
    sens, spec = rates(scored, positive, point.threshold)
    assert sens >= target
    assert (point.sensitivity, point.specificity) == (sens, spec)
    higher = min(s for s in scored if s > point.threshold)  # the next threshold up misses the target
    assert rates(scored, positive, higher)[0] < target
    assert point.positives == 200 and point.negatives == 200


def test_a_higher_target_costs_specificity() -> None:
    probs, targets = two_class(400, seed=2)
    loose = choose(probs, targets, NAMES, target_sensitivity=0.8)
    strict = choose(probs, targets, NAMES, target_sensitivity=0.99)
    assert loose is not None and strict is not None
    assert strict.threshold < loose.threshold
    assert strict.specificity < loose.specificity


def test_no_point_without_the_negative_class_or_without_both_sides() -> None:
    probs, targets = two_class(20, seed=3)
    assert choose(probs, targets, ["cat", "dog"]) is None
    assert choose(probs, [1] * 20, NAMES) is None  # no negatives: nothing to trade
    assert choose(probs, [0] * 20, NAMES) is None  # no positives: no sensitivity


def test_decision_in_four_classes_picks_the_likeliest_tumour_once_over_the_threshold() -> None:
    names = ["glioma", "meningioma", "no_tumor", "pituitary"]
    point = OperatingPoint("no_tumor", 0.2, 0.97, "validation", 0.97, 0.9, 30, 30)
    # argmax says no_tumor, but 1 - P(no_tumor) = 0.4 >= 0.2: screened positive, as meningioma
    decision = point.decide(names, [0.1, 0.25, 0.6, 0.05])
    assert decision["label"] == "meningioma"
    assert decision["score"] == pytest.approx(0.4)
    assert decision["threshold"] == 0.2 and "no_tumor" in decision["target"]
    assert point.decide(names, [0.05, 0.05, 0.85, 0.05])["label"] == "no_tumor"
    assert OperatingPoint.from_dict(point.as_dict()) == point
    assert OperatingPoint.from_dict(None) is None


def test_a_threshold_chosen_elsewhere_is_kept_and_measured() -> None:
    probs, targets = two_class(400, seed=4)
    point = choose(probs, targets, NAMES, threshold=0.3, chosen_on="out-of-fold (make cv)")
    assert point is not None and point.threshold == 0.3 and point.chosen_on == "out-of-fold (make cv)"
    assert (point.sensitivity, point.specificity) == rates(scores(probs, 0), [t == 1 for t in targets], 0.3)
