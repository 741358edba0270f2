"""Evaluation maths, pure torch: temperature scaling, calibration error, per-class rates, bootstrap CIs.

No Lightning here: the CLI and the test report call these on logits they collected, and the
functions are tested on their own.

* :func:`fit_temperature` -- one scalar ``T`` minimising the NLL of ``softmax(logits / T)``
  (LBFGS on ``log T``), fitted on the validation split only.
* :func:`ece` -- expected calibration error, torchmetrics' ``MulticlassCalibrationError``
  (15 bins, L1).
* :func:`class_rates` -- per class (one-vs-rest): sensitivity (recall), specificity, PPV, NPV.
* :func:`bootstrap` -- 95 % percentile intervals, resampling whole near-duplicate *groups*
  (not images), since images of one group are not independent.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch.nn import functional as F
from torchmetrics.functional.classification import multiclass_auroc, multiclass_calibration_error

ECE_BINS = 15
RATES = ("sensitivity", "specificity", "ppv", "npv")


def nll(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``softmax(logits / temperature)``."""
    return float(F.cross_entropy(logits.double() / temperature, targets))


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature minimising the NLL of ``logits`` (one scalar, LBFGS on its log).

    Kept in ``[0.05, 20]``; returns 1.0 for empty input.
    """
    if len(targets) == 0:
        return 1.0
    logits = logits.detach().double()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    optimiser.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def ece(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error (top-label, L1, ``n_bins`` equal-width bins)."""
    return float(
        multiclass_calibration_error(probs.float(), targets, probs.shape[1], n_bins=n_bins, norm="l1")
    )


def reliability(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per confidence bin: mean confidence, accuracy and count (the reliability diagram's data)."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == targets).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    out = []
    for low, high in itertools.pairwise(edges.tolist()):
        inside = (confidence.double() > low) & (confidence.double() <= high)  # (low, high]
        n = int(inside.sum())
        out.append(
            {
                "low": low,
                "high": high,
                "count": n,
                "confidence": float(confidence[inside].double().mean()) if n else 0.0,
                "accuracy": float(correct[inside].mean()) if n else 0.0,
            }
        )
    return out


def _ratio(num: torch.Tensor, den: torch.Tensor) -> float:
    return float(num) / float(den) if float(den) > 0 else float("nan")


def class_rates(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> list[dict[str, float]]:
    """One-vs-rest sensitivity, specificity, PPV and NPV per class (NaN where undefined)."""
    out = []
    for c in range(num_classes):
        pos, hit = targets == c, preds == c
        tp, fp = (pos & hit).sum(), (~pos & hit).sum()
        fn, tn = (pos & ~hit).sum(), (~pos & ~hit).sum()
        out.append(
            {
                "sensitivity": _ratio(tp, tp + fn),
                "specificity": _ratio(tn, tn + fp),
                "ppv": _ratio(tp, tp + fp),
                "npv": _ratio(tn, tn + fn),
            }
        )
    return out


def summary(probs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Flat dict of the headline numbers: accuracy, macro AUROC, ECE, and the per-class rates."""
    num_classes = probs.shape[1]
    preds = probs.argmax(dim=1)
    stats = {"accuracy": float((preds == targets).double().mean()) if len(targets) else float("nan")}
    if len(torch.unique(targets)) == num_classes:
        stats["auroc"] = float(multiclass_auroc(probs.float(), targets, num_classes, average="macro"))
    else:
        stats["auroc"] = float("nan")  # a resample without every class: AUROC is undefined
    stats["ece"] = ece(probs, targets) if len(targets) else float("nan")
    for c, rates in enumerate(class_rates(preds, targets, num_classes)):
        for name, value in rates.items():
            stats[f"{name}/{c}"] = value
    return stats


def bootstrap(
    probs: torch.Tensor,
    targets: torch.Tensor,
    groups: Sequence[str],
    *,
    statistic: Callable[[torch.Tensor, torch.Tensor], dict[str, float]] = summary,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    point: dict[str, float] | None = None,
) -> dict[str, dict[str, float]]:
    """Point estimate and percentile CI of every statistic, resampling whole groups.

    Returns ``{name: {"value", "low", "high"}}``. The point estimate is ``statistic`` on all
    the data unless ``point`` is given (a statistic with randomness of its own in each
    resample). Resamples where a statistic is undefined (NaN) are left out of its interval.
    """
    ids = sorted(set(groups))
    index_of = {g: i for i, g in enumerate(ids)}
    group_index = torch.tensor([index_of[g] for g in groups])
    members = [torch.nonzero(group_index == i).flatten() for i in range(len(ids))]
    point = statistic(probs, targets) if point is None else point
    generator = torch.Generator().manual_seed(seed)
    samples: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(n_resamples):
        chosen = torch.randint(len(ids), (len(ids),), generator=generator)
        rows = torch.cat([members[int(g)] for g in chosen])
        for key, value in statistic(probs[rows], targets[rows]).items():
            if value == value:  # not NaN
                samples[key].append(value)
    alpha = (1 - level) / 2
    out = {}
    for key, value in point.items():
        values = torch.tensor(samples[key], dtype=torch.float64)
        low, high = (
            (float(values.quantile(alpha)), float(values.quantile(1 - alpha)))
            if len(values)
            else (float("nan"), float("nan"))
        )
        out[key] = {"value": value, "low": low, "high": high}
    return out
