"""The screening operating point: a threshold on P(not negative) chosen for a target sensitivity.

A screening reader wants few missed tumours, at a price in false alarms. The argmax answer
does not say where that trade sits, so the model also carries an *operating point*: call a
scan positive when its score ``1 - P(negative class)`` (the calibrated probability of any
tumour) reaches a threshold. The threshold is the highest one whose sensitivity on held-out
scans (the validation split after ``fit``; out-of-fold scans under ``make cv``) reaches the
target, so it never sees the test split. A positive scan gets the most likely non-negative
class as its label, so the rule works for any number of classes.

Pure Python on lists of floats: the training side (choosing, reporting) and the inference
core (applying) share it, and the inference core needs no torch for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: The class a screening test must not miss the complement of (Br35H and the 4-class set).
DEFAULT_NEGATIVE = "no_tumor"
DEFAULT_TARGET = 0.97


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold on ``1 - P(negative_class)`` and what it was chosen for."""

    negative_class: str
    threshold: float
    target_sensitivity: float
    chosen_on: str
    #: Sensitivity and specificity where it was chosen, and how many scans that was.
    sensitivity: float
    specificity: float
    positives: int
    negatives: int

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (stored in the checkpoint and in ``model_meta.json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> OperatingPoint | None:
        """The operating point of a stored dict, or ``None`` when there is none."""
        return cls(**data) if data else None

    def target(self) -> str:
        """What the threshold targets, in words."""
        return (
            f"sensitivity >= {self.target_sensitivity:.0%} for any class but {self.negative_class} "
            f"(chosen on {self.chosen_on})"
        )

    def decide(self, class_names: Sequence[str], probs: Sequence[float]) -> dict[str, Any]:
        """The ``decision`` block of one answer: label, score, threshold and target."""
        negative = class_names.index(self.negative_class)
        score = 1.0 - float(probs[negative])
        if score >= self.threshold:
            label = max(
                (name for i, name in enumerate(class_names) if i != negative),
                key=lambda name: probs[class_names.index(name)],
            )
        else:
            label = self.negative_class
        return {
            "label": label,
            "score": score,
            "threshold": self.threshold,
            "target": self.target(),
        }


def agreement(
    point: OperatingPoint,
    class_names: Sequence[str],
    ref: Sequence[Sequence[float]],
    got: Sequence[Sequence[float]],
) -> float:
    """The share of scans whose ``decision`` label is the same under ``ref`` and ``got`` probabilities."""
    same = [
        point.decide(class_names, a)["label"] == point.decide(class_names, b)["label"]
        for a, b in zip(ref, got, strict=True)
    ]
    return sum(same) / max(1, len(same))


def scores(probs: Sequence[Sequence[float]], negative: int) -> list[float]:
    """``1 - P(negative)`` per scan."""
    return [1.0 - float(row[negative]) for row in probs]


def rates(scored: Sequence[float], positive: Sequence[bool], threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity of ``score >= threshold`` (NaN where a side is empty)."""
    pos = [s for s, p in zip(scored, positive, strict=True) if p]
    neg = [s for s, p in zip(scored, positive, strict=True) if not p]
    sens = sum(s >= threshold for s in pos) / len(pos) if pos else math.nan
    spec = sum(s < threshold for s in neg) / len(neg) if neg else math.nan
    return sens, spec


def choose(
    probs: Sequence[Sequence[float]],
    targets: Sequence[int],
    class_names: Sequence[str],
    *,
    negative_class: str = DEFAULT_NEGATIVE,
    target_sensitivity: float = DEFAULT_TARGET,
    chosen_on: str = "validation",
    threshold: float | None = None,
) -> OperatingPoint | None:
    """The highest threshold with sensitivity >= the target on these scans.

    A given ``threshold`` (one chosen elsewhere, e.g. on the out-of-fold predictions of
    ``make cv``) is kept instead, and only measured here. ``None`` when the classes have no
    ``negative_class`` or the scans lack positives or negatives (nothing to choose on).
    """
    if negative_class not in class_names:
        return None
    negative = list(class_names).index(negative_class)
    scored = scores(probs, negative)
    positive = [int(t) != negative for t in targets]
    pos = sorted((s for s, p in zip(scored, positive, strict=True) if p), reverse=True)
    if not pos or all(positive):
        return None
    if threshold is None:
        # The k-th highest positive score keeps k of the positives at or above the threshold.
        threshold = pos[max(1, math.ceil(target_sensitivity * len(pos) - 1e-9)) - 1]
    sens, spec = rates(scored, positive, threshold)
    return OperatingPoint(
        negative_class=negative_class,
        threshold=threshold,
        target_sensitivity=target_sensitivity,
        chosen_on=chosen_on,
        sensitivity=sens,
        specificity=spec,
        positives=len(pos),
        negatives=len(positive) - len(pos),
    )
