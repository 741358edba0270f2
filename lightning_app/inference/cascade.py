"""A cascade: an ensemble's first member answers alone where it is sure, the whole ensemble elsewhere.

Out of fold (docs/benchmarks.md, row (s)) the seed ensemble's accuracy gain lives in the scans
its first member doubts: answering the rest with that member alone keeps the ensemble's
accuracy at about a third of its forward passes. The served cascade is two ONNX graphs of the
same export, with the ensemble's output names: the first member's
(:meth:`lightning_app.models.ensemble.Ensemble.leader`) runs on every scan of a batch; the
other members' (:meth:`~lightning_app.models.ensemble.Ensemble.followers`) only on the rows a
:class:`CascadeRule` calls doubtful, where the two answers combine into exactly the whole
ensemble's (:func:`combine`): a doubtful scan costs ``N`` forward passes, a sure one one.

A scan is doubtful when the member's top calibrated probability is under ``confidence``, or,
with a screening operating point, when the member's screening score ``1 - P(negative)`` lies
within ``margin`` (in log-odds) of the threshold: the ``decision`` block is the served answer
a reader acts on, so the member may not decide it where the ensemble could decide otherwise.

The cascade's ``features`` and ``stage_*`` outputs are the first member's, for every row (the
OOD guard and the prediction log are fitted on them at export); ``cam`` (explanations only)
is the whole ensemble's for every row: the two graphs' maps side by side, as the ensemble's
own graph lays its members' out. Torch-free, like the rest of the serving core.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from lightning_app.inference.forward import Backend, Forward, softmax
from lightning_app.models.screening import OperatingPoint


def log_odds(p: np.ndarray | float) -> np.ndarray:
    """``log(p / (1 - p))``, with ``p`` clipped to ``[1e-7, 1 - 1e-7]``."""
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    out: np.ndarray = np.log(q) - np.log1p(-q)
    return out


@dataclass(frozen=True)
class CascadeRule:
    """When the first member's answer stands: how sure it must be (see the module docstring)."""

    confidence: float
    #: Log-odds the member's screening score must keep from the operating point's threshold.
    margin: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0 or not math.isfinite(self.margin) or self.margin < 0:
            raise ValueError(
                f"a cascade needs a confidence in [0, 1] and a margin >= 0, "
                f"got {self.confidence} and {self.margin}"
            )

    def doubtful(
        self, probs: np.ndarray, class_names: Sequence[str], operating_point: OperatingPoint | None = None
    ) -> np.ndarray:
        """``bool [N]``: the rows of the member's calibrated ``probs [N, C]`` the ensemble must answer."""
        p = np.asarray(probs, dtype=np.float64)
        unsure: np.ndarray = p.max(axis=1) < self.confidence
        if operating_point is not None and self.margin > 0:
            score = 1.0 - p[:, list(class_names).index(operating_point.negative_class)]
            unsure |= np.abs(log_odds(score) - log_odds(operating_point.threshold)) < self.margin
        return unsure

    def as_dict(self) -> dict[str, float]:
        """JSON-ready (``model_meta.json``, under ``backend.cascade.rule``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CascadeRule:
        """The rule of a stored dict."""
        return cls(confidence=float(data["confidence"]), margin=float(data.get("margin", 0.0)))


def combine(first: np.ndarray, followers: np.ndarray, members: int) -> np.ndarray:
    """The whole ensemble's output from its parts': ``log((p_1 + (N - 1) * p_rest) / N)``.

    ``first`` and ``followers`` are the two graphs' outputs, ``log`` of the first member's and
    of the other ``members - 1`` members' mean calibrated probabilities.
    """
    share = math.log(members - 1) - math.log(members)
    out: np.ndarray = np.logaddexp(first - math.log(members), followers + share).astype(np.float32)
    return out


class CascadeBackend:
    """The first member on every row, the other members on the doubtful ones: a :class:`Backend`."""

    def __init__(
        self,
        first: Backend,
        followers: Backend,
        rule: CascadeRule,
        class_names: Sequence[str],
        *,
        members: int,
        operating_point: OperatingPoint | None = None,
        temperature: float = 1.0,
    ) -> None:
        if members < 2:
            raise ValueError(f"a cascade splits an ensemble of at least two members, got {members}")
        self.first, self.followers, self.rule, self.members = first, followers, rule, members
        self.class_names = list(class_names)
        self.operating_point = operating_point
        self.temperature = temperature
        self.name = f"{followers.name}-cascade"
        self.has_cam = first.has_cam and followers.has_cam
        #: The feature sources each forward returns: the first member's.
        self.source_names = list(getattr(first, "source_names", ["features"]))
        #: Rows seen and rows sent to the other members since start (``deferred / seen``: the share).
        self.seen = self.deferred = 0

    def __call__(self, x: Any, *, cam: bool = False) -> Forward:
        """One batch: the member's outputs, its logits replaced by the ensemble's on doubtful rows."""
        pixels = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        lead = self.first(pixels, cam=cam)
        probs = softmax(lead.logits, self.temperature)
        doubtful = self.rule.doubtful(probs, self.class_names, self.operating_point)
        logits = lead.logits.copy()
        cam_out = None
        if cam:  # an explanation: the ensemble's map for every row
            rest = self.followers(pixels, cam=True)
            logits[doubtful] = combine(lead.logits, rest.logits, self.members)[doubtful]
            if lead.cam is not None and rest.cam is not None:
                cam_out = np.concatenate([lead.cam, rest.cam], axis=1)
        elif doubtful.any():
            rest = self.followers(pixels[doubtful])
            logits[doubtful] = combine(lead.logits[doubtful], rest.logits, self.members)
        self.seen += len(pixels)
        self.deferred += int(doubtful.sum())
        return replace(lead, logits=logits, cam=cam_out)
