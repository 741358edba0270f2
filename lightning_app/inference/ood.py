"""Out-of-distribution guard: flags images unlike the scans the model was trained on.

The score is a feature ensemble of Mahalanobis distances (Lee et al. 2018). Each part reads
one feature source of the served forward pass (:meth:`Forward.sources`): for backbones with
stages named in :data:`~lightning_app.inference.taps.STAGE_LAYERS`, the per-channel mean and
standard deviation of every stage's activations (the last stage's mean is the penultimate
features; the earlier stages' low-level statistics tell photos, noise and documents from
scans better than the last layer alone); otherwise the penultimate features (the input of
the final linear layer) alone. Each part is the distance to the
nearest class mean under one shared covariance estimated with Ledoit-Wolf shrinkage, fitted
on the TRAIN split at export; each part's distances are standardised by their mean and
standard deviation on the VALIDATION split, and the guard's score is the combination
(:data:`COMBINE`) of the standardised parts. The threshold is the smallest score that keeps
at least 99 % of the VALIDATION split in-distribution. Everything ships in the ``.mar``
(:data:`lightning_app.inference.artefacts.OOD_STATS`). A score above the threshold means
"not like the training scans": the answer still carries its probabilities, plus a warning.

A guard saved before the ensemble (format version 2: one part on ``features``, raw
distances) loads as a one-part guard with the same scores and threshold.

numpy only: fitting, scoring and loading need no torch (the file is read by
:mod:`~lightning_app.inference.ptfile`); only :meth:`OODGuard.save` (export time) uses
``torch.save``, so the artefact stays loadable with ``torch.load(weights_only=True)``.

:func:`energy` (Liu et al. 2020) is the alternative measured in ``benchmarks/bench_ood.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from lightning_app.inference import artefacts, ptfile

#: Fraction of the validation split that must stay in-distribution.
KEEP = 0.99
WARNING = (
    "This image does not look like the brain MRIs the model was trained on "
    "(out-of-distribution score {score:.1f} > threshold {threshold:.1f}): "
    "the probabilities below are not trustworthy."
)


def ledoit_wolf(centred: Any) -> tuple[np.ndarray, float]:
    """Shrunk covariance of centred rows ``[n, p]`` and the Ledoit-Wolf shrinkage in ``[0, 1]``."""
    x = np.asarray(centred, dtype=np.float64)
    n, p = x.shape
    emp = x.T @ x / n
    mu = float(np.trace(emp)) / p
    x2 = x**2
    beta_ = float((x2.T @ x2).sum())
    delta_ = float((emp**2).sum())
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2 * mu * float(np.trace(emp)) + p * mu**2) / p
    shrinkage = 0.0 if delta <= 0 else min(max(beta, 0.0), delta) / delta
    cov = (1 - shrinkage) * emp + shrinkage * mu * np.eye(p, dtype=np.float64)
    return cov, shrinkage


def energy(logits: Any) -> np.ndarray:
    """Energy score ``-logsumexp(logits)``: higher = less like the training data."""
    x = np.asarray(logits, dtype=np.float64)
    top = x.max(axis=1, keepdims=True)
    out: np.ndarray = -(top[:, 0] + np.log(np.exp(x - top).sum(axis=1)))
    return out


def threshold_for(scores: Any, keep: float = KEEP) -> float:
    """The smallest threshold with at least ``keep`` of ``scores`` at or below it."""
    ranked = np.sort(np.asarray(scores, dtype=np.float64))
    k = max(1, math.ceil(keep * len(ranked)))
    return float(ranked[k - 1])


@dataclass(frozen=True)
class Mahalanobis:
    """One part of the guard: class means and shared precision of one feature source."""

    source: str  # a key of ``Forward.sources()``: ``features`` or ``stage_<layer>``
    means: np.ndarray  # float64 [C, D]
    precision: np.ndarray  # float64 [D, D]
    shrinkage: float = 0.0
    loc: float = 0.0  # standardisation of the distances: (d - loc) / scale
    scale: float = 1.0

    @classmethod
    def fit(cls, features: Any, labels: Any, num_classes: int, source: str) -> Mahalanobis:
        """Means per class and the shrunk shared covariance of ``features [N, D]``."""
        f = np.asarray(features, dtype=np.float64)
        y = np.asarray(labels, dtype=np.int64)
        if any(not (y == c).any() for c in range(num_classes)):
            raise ValueError("every class needs at least one training image to fit the OOD guard")
        means = np.stack([f[y == c].mean(axis=0) for c in range(num_classes)])
        cov, shrinkage = ledoit_wolf(f - means[y])
        return cls(source, means, np.linalg.inv(cov), shrinkage)

    def distances(self, features: Any) -> np.ndarray:
        """Mahalanobis distance to the nearest class mean, ``float64 [N]``.

        ``d_c^2 = f'Pf - 2 f'P mu_c + mu_c'P mu_c``: one float32 product ``[N, D] @ [D, D]``
        per batch, well under a millisecond next to the forward pass.
        """
        precision, means_p, offsets = self._cache()
        f = np.asarray(features, dtype=np.float32)
        pf = f @ precision  # [N, D]
        cross = f @ means_p.T  # [N, C]
        squared = (
            (pf * f).sum(axis=1, keepdims=True, dtype=np.float64) - 2 * cross.astype(np.float64) + offsets
        )
        out: np.ndarray = np.sqrt(np.maximum(squared, 0).min(axis=1))
        return out

    def standardised(self, features: Any) -> np.ndarray:
        """``(distance - loc) / scale``, ``float64 [N]``."""
        return (self.distances(features) - self.loc) / self.scale

    def _cache(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cached = self.__dict__.get("_cached")
        if cached is None:
            means_p = self.means @ self.precision  # [C, D], float64
            offsets = (means_p * self.means).sum(axis=1)[None]  # [1, C]: mu_c' P mu_c
            cached = (
                np.ascontiguousarray(self.precision, dtype=np.float32),
                means_p.astype(np.float32),
                offsets,
            )
            object.__setattr__(self, "_cached", cached)  # a cache on a frozen dataclass
        return cached

    def state(self) -> dict[str, Any]:
        """Plain arrays and numbers (:meth:`OODGuard.save` writes the arrays as tensors)."""
        return {
            "source": self.source,
            "means": self.means,
            "precision": self.precision,
            "shrinkage": self.shrinkage,
            "loc": self.loc,
            "scale": self.scale,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Mahalanobis:
        """Inverse of :meth:`state`."""
        return cls(
            source=str(state["source"]),
            means=np.asarray(state["means"], dtype=np.float64),
            precision=np.asarray(state["precision"], dtype=np.float64),
            shrinkage=float(state.get("shrinkage", 0.0)),
            loc=float(state.get("loc", 0.0)),
            scale=float(state.get("scale", 1.0)),
        )


#: How the standardised part scores combine into the guard's score.
COMBINE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "max": lambda parts: parts.max(axis=0),
    "sum": lambda parts: parts.sum(axis=0),
}
#: The rule shipped (chosen on validation + corrupted validation scans: docs/benchmarks.md).
DEFAULT_COMBINE = "sum"

Sources = Mapping[str, np.ndarray]


def as_sources(x: Any) -> Sources:
    """A ``Forward`` (its :meth:`sources`), a mapping of sources, or a bare feature array."""
    if hasattr(x, "shape") and not isinstance(x, Mapping):  # a numpy array (or a tensor)
        return {"features": np.asarray(x)}
    if hasattr(x, "sources"):
        sources: Sources = x.sources()
        return sources
    return dict(x)


@dataclass(frozen=True)
class OODGuard:
    """The parts, their combination and the threshold; scores forward passes, flags outliers."""

    parts: tuple[Mahalanobis, ...]
    threshold: float = math.inf
    combine: str = DEFAULT_COMBINE

    @classmethod
    def fit(
        cls,
        sources: Any,
        labels: Any,
        num_classes: int,
        *,
        names: Sequence[str] | None = None,
        combine: str = DEFAULT_COMBINE,
    ) -> OODGuard:
        """One :class:`Mahalanobis` part per source (default: the stages, else ``features``)."""
        given = as_sources(sources)
        if combine not in COMBINE:
            raise ValueError(f"unknown combination {combine!r}: one of {', '.join(COMBINE)}")
        stages = [n for n in given if n.startswith("stage_")]
        # default: the stage statistics when there are stages (the last stage's mean IS the
        # penultimate features of a pooling head), else the penultimate features
        chosen = list(names) if names is not None else (stages or ["features"])
        parts = tuple(Mahalanobis.fit(given[n], labels, num_classes, n) for n in chosen)
        return cls(parts, math.inf, combine)

    @property
    def shrinkage(self) -> float:
        """The Ledoit-Wolf shrinkage of the penultimate-feature part (the first part if none)."""
        part = next((p for p in self.parts if p.source == "features"), self.parts[0])
        return part.shrinkage

    def part_scores(self, x: Any) -> np.ndarray:
        """Standardised distances of every part, ``float64 [P, N]``."""
        sources = as_sources(x)
        missing = [p.source for p in self.parts if p.source not in sources]
        if missing:
            raise ValueError(f"the forward pass lacks the OOD guard's source(s) {', '.join(missing)}")
        return np.stack([p.standardised(sources[p.source]) for p in self.parts])

    def scores(self, x: Any) -> np.ndarray:
        """The guard's score of each image, ``float64 [N]`` (higher: less like the training scans)."""
        parts = self.part_scores(x)
        return parts[0] if len(self.parts) == 1 else COMBINE[self.combine](parts)

    def calibrated(self, val: Any, keep: float = KEEP) -> OODGuard:
        """Standardise each part on the validation sources, then the threshold that keeps ``keep``.

        A one-part guard keeps raw distances (its score is the plain Mahalanobis distance).
        """
        sources = as_sources(val)
        parts = self.parts
        if len(parts) > 1:
            standardised = []
            for part in parts:
                d = part.distances(sources[part.source])
                scale = float(d.std(ddof=1)) if len(d) > 1 else 1.0
                standardised.append(replace(part, loc=float(d.mean()), scale=scale if scale > 0 else 1.0))
            parts = tuple(standardised)
        guard = OODGuard(parts, math.inf, self.combine)
        return replace(guard, threshold=threshold_for(guard.scores(sources), keep))

    def blocks(self, x: Any) -> list[dict[str, Any]]:
        """The ``in_distribution`` block of each image."""
        return [
            {
                "ok": bool(s <= self.threshold),
                "score": round(float(s), 4),
                "threshold": round(self.threshold, 4),
            }
            for s in self.scores(x).tolist()
        ]

    def save(self, path: Path) -> Path:
        """Write the statistics (plain tensors: loadable with ``weights_only=True``; needs torch)."""
        import torch

        def tensors(state: dict[str, Any]) -> dict[str, Any]:
            return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in state.items()}

        torch.save(
            {
                "method": "mahalanobis-ensemble",
                "combine": self.combine,
                "threshold": self.threshold,
                "parts": [tensors(p.state()) for p in self.parts],
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
        saved = ptfile.load(path)
        if "parts" not in saved:  # format version 2: one Mahalanobis on the penultimate features
            saved = {"threshold": saved["threshold"], "parts": [{"source": "features", **saved}]}
        return cls(
            parts=tuple(Mahalanobis.from_state(p) for p in saved["parts"]),
            threshold=float(saved["threshold"]),
            combine=str(saved.get("combine", DEFAULT_COMBINE)),
        )


def annotate(answer: dict[str, Any], block: dict[str, Any]) -> dict[str, Any]:
    """Add the ``in_distribution`` block to an answer, and the ``warning`` when it is not ok."""
    answer["in_distribution"] = block
    if not block["ok"]:
        answer["warning"] = WARNING.format(score=block["score"], threshold=block["threshold"])
    return answer
