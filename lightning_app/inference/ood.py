"""Out-of-distribution guard: flags images unlike the scans the model was trained on.

The score is the Mahalanobis distance (Lee et al. 2018) of the model's own penultimate
features (:attr:`Forward.features`, the input of the final linear layer) to the nearest
class mean, under one shared covariance estimated with Ledoit-Wolf shrinkage. The means and
covariance are fitted on the TRAIN split at export; the threshold is the smallest score that
keeps at least 99 % of the VALIDATION split in-distribution. Both ship in the ``.mar``
(:data:`lightning_app.inference.artefacts.OOD_STATS`). A score above the threshold means
"not like the training scans": the answer still carries its probabilities, plus a warning.

:func:`energy` (Liu et al. 2020) is the alternative measured in ``benchmarks/bench_ood.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lightning_app.inference import artefacts
from lightning_app.inference.threads import one_thread

#: Fraction of the validation split that must stay in-distribution.
KEEP = 0.99
WARNING = (
    "This image does not look like the brain MRIs the model was trained on "
    "(out-of-distribution score {score:.1f} > threshold {threshold:.1f}): "
    "the probabilities below are not trustworthy."
)


def ledoit_wolf(centred: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Shrunk covariance of centred rows ``[n, p]`` and the Ledoit-Wolf shrinkage in ``[0, 1]``."""
    x = centred.double()
    n, p = x.shape
    emp = x.T @ x / n
    mu = float(torch.trace(emp)) / p
    x2 = x**2
    beta_ = float((x2.T @ x2).sum())
    delta_ = float((emp**2).sum())
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2 * mu * float(torch.trace(emp)) + p * mu**2) / p
    shrinkage = 0.0 if delta <= 0 else min(max(beta, 0.0), delta) / delta
    cov = (1 - shrinkage) * emp + shrinkage * mu * torch.eye(p, dtype=torch.float64)
    return cov, shrinkage


def energy(logits: torch.Tensor) -> torch.Tensor:
    """Energy score ``-logsumexp(logits)``: higher = less like the training data."""
    return -torch.logsumexp(logits.double(), dim=1)


def threshold_for(scores: torch.Tensor, keep: float = KEEP) -> float:
    """The smallest threshold with at least ``keep`` of ``scores`` at or below it."""
    ranked = scores.double().sort().values
    k = max(1, math.ceil(keep * len(ranked)))
    return float(ranked[k - 1])


@dataclass(frozen=True)
class OODGuard:
    """Class means, shared precision matrix and threshold; scores features, flags outliers."""

    means: torch.Tensor  # float64 [C, D]
    precision: torch.Tensor  # float64 [D, D]
    threshold: float
    shrinkage: float = 0.0

    @classmethod
    def fit(cls, features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> OODGuard:
        """Means per class and the shrunk shared covariance of ``features [N, D]`` (threshold inf)."""
        f = features.double()
        means = torch.stack([f[labels == c].mean(dim=0) for c in range(num_classes)])
        if torch.isnan(means).any():
            raise ValueError("every class needs at least one training image to fit the OOD guard")
        cov, shrinkage = ledoit_wolf(f - means[labels])
        return cls(means=means, precision=torch.linalg.inv(cov), threshold=math.inf, shrinkage=shrinkage)

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distance to the nearest class mean, ``float64 [N]``.

        ``d_c^2 = f'Pf - 2 f'P mu_c + mu_c'P mu_c``: one float32 product ``[N, D] @ [D, D]``
        per batch, well under a millisecond next to the forward pass.
        """
        precision, means_p, offsets = self._cache()
        f = features.float()
        with one_thread():  # too small to share the cores (lightning_app.inference.threads)
            pf = f @ precision  # [N, D]
            cross = f @ means_p.T  # [N, C]
        squared = (pf * f).sum(dim=1, keepdim=True).double() - 2 * cross.double() + offsets
        return squared.clamp_min(0).min(dim=1).values.sqrt()

    def _cache(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cached = self.__dict__.get("_cached")
        if cached is None:
            means_p = self.means @ self.precision  # [C, D], float64
            offsets = (means_p * self.means).sum(dim=1)[None]  # [1, C]: mu_c' P mu_c
            cached = (self.precision.float().contiguous(), means_p.float(), offsets)
            object.__setattr__(self, "_cached", cached)  # a cache on a frozen dataclass
        return cached

    def calibrated(self, val_features: torch.Tensor, keep: float = KEEP) -> OODGuard:
        """The same guard with the threshold that keeps ``keep`` of the validation features."""
        return OODGuard(
            self.means, self.precision, threshold_for(self.scores(val_features), keep), self.shrinkage
        )

    def blocks(self, features: torch.Tensor) -> list[dict[str, Any]]:
        """The ``in_distribution`` block of each image."""
        return [
            {
                "ok": bool(s <= self.threshold),
                "score": round(float(s), 4),
                "threshold": round(self.threshold, 4),
            }
            for s in self.scores(features).tolist()
        ]

    def save(self, path: Path) -> Path:
        """Write the statistics (plain tensors: loadable with ``weights_only=True``)."""
        torch.save(
            {
                "method": "mahalanobis",
                "means": self.means,
                "precision": self.precision,
                "threshold": self.threshold,
                "shrinkage": self.shrinkage,
            },
            path,
        )
        return path

    @classmethod
    def load(cls, model_dir: Path) -> OODGuard | None:
        """The guard of an exported model directory, or ``None`` when it has none (older exports)."""
        path = Path(model_dir) / artefacts.OOD_STATS
        if not path.is_file():
            return None
        saved = torch.load(path, map_location="cpu", weights_only=True)
        return cls(
            means=saved["means"].double(),
            precision=saved["precision"].double(),
            threshold=float(saved["threshold"]),
            shrinkage=float(saved.get("shrinkage", 0.0)),
        )


def annotate(answer: dict[str, Any], block: dict[str, Any]) -> dict[str, Any]:
    """Add the ``in_distribution`` block to an answer, and the ``warning`` when it is not ok."""
    answer["in_distribution"] = block
    if not block["ok"]:
        answer["warning"] = WARNING.format(score=block["score"], threshold=block["threshold"])
    return answer
