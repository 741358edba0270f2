"""After fit: fit the temperature on validation logits; after test: calibration, CIs and figures.

The maths lives in :mod:`lightning_app.training.evaluation` (pure torch); this module moves logits
between the model, its checkpoint and ``metrics.json``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lightning_app.data.atomic import write_atomic
from lightning_app.models import screening
from lightning_app.training import evaluation as ev
from lightning_app.training.plots import plot_reliability, plot_roc

RELIABILITY_PNG = "reliability_diagram.png"
ROC_PNG = "roc_curve.png"
BOOTSTRAP_RESAMPLES = 1000


@torch.no_grad()
def collect_logits(
    model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw logits and targets of every batch, the model in eval mode (restored after)."""
    was_training = model.training
    model.eval()
    logits, targets = [], []
    for images, labels in batches:
        logits.append(model(images).float())
        targets.append(labels)
    model.train(was_training)
    return torch.cat(logits), torch.cat(targets)


def operating_point(model: Any, probs: torch.Tensor, targets: torch.Tensor) -> dict[str, Any] | None:
    """The screening operating point of ``model``'s settings on these calibrated probabilities.

    Chosen here (validation) unless the model's ``operating_threshold`` fixes it; then it is
    only measured here.
    """
    hp = getattr(model, "hparams", {})
    negative = hp.get("negative_class", screening.DEFAULT_NEGATIVE)
    if not negative:
        return None
    fixed = hp.get("operating_threshold")
    point = screening.choose(
        probs.tolist(),
        targets.tolist(),
        list(getattr(model, "class_names", [])),
        negative_class=negative,
        target_sensitivity=float(hp.get("target_sensitivity", screening.DEFAULT_TARGET)),
        chosen_on="validation" if fixed is None else str(hp.get("operating_source") or "the config"),
        threshold=None if fixed is None else float(fixed),
    )
    return None if point is None else point.as_dict()


def fit_and_store(
    model: Any,
    val_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    checkpoint: str | None,
    *,
    temperature: float | None = None,
) -> dict[str, Any]:
    """Fit ``model.temperature`` and the operating point on the validation split; store both.

    ``model`` must already hold the weights of ``checkpoint`` (the best one); both go into
    ``checkpoint`` too. Returns the temperature with validation NLL and ECE before and after.
    A given ``temperature`` is kept, not fitted (an ensemble of calibrated members).
    """
    logits, targets = collect_logits(model, val_batches)
    temperature = ev.fit_temperature(logits, targets) if temperature is None else temperature
    model.operating_point = operating_point(model, (logits / temperature).softmax(dim=1), targets)
    info = {
        "temperature": temperature,
        "val_nll_before": ev.nll(logits, targets),
        "val_nll_after": ev.nll(logits, targets, temperature),
        "val_ece_before": ev.ece(logits.softmax(dim=1), targets),
        "val_ece_after": ev.ece((logits / temperature).softmax(dim=1), targets),
    }
    model.temperature.fill_(temperature)
    if checkpoint:
        path = Path(checkpoint)
        state = torch.load(path, map_location="cpu", weights_only=False)
        state["state_dict"]["temperature"] = torch.tensor(temperature)
        state["calibration"] = info
        state["operating_point"] = model.operating_point
        write_atomic(path, lambda tmp: torch.save(state, tmp))
    return info


def _clean(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)


def operating_point_report(
    point: dict[str, Any],
    probs: torch.Tensor,
    targets: torch.Tensor,
    groups: Sequence[str],
    class_names: list[str],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> dict[str, Any]:
    """The operating point with its sensitivity and specificity on these scans (group-bootstrap CIs)."""
    negative = class_names.index(point["negative_class"])

    def statistic(p: torch.Tensor, t: torch.Tensor) -> dict[str, float]:
        sens, spec = screening.rates(
            screening.scores(p.tolist(), negative), (t != negative).tolist(), point["threshold"]
        )
        return {"sensitivity": sens, "specificity": spec}

    cis = ev.bootstrap(probs, targets, groups, statistic=statistic, n_resamples=resamples)
    return {
        **point,
        "test": {name: {k: _clean(v) for k, v in cis[name].items()} for name in statistic(probs, targets)},
    }


def report_extras(
    logits: torch.Tensor,
    targets: torch.Tensor,
    groups: Sequence[str],
    *,
    temperature: float,
    class_names: list[str],
    out_dir: Path,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> dict[str, Any]:
    """Calibration before/after, per-class rates with group-bootstrap CIs, ROC + reliability PNGs."""
    raw = logits.softmax(dim=1)
    calibrated = (logits / temperature).softmax(dim=1)
    plot_reliability(
        {
            "before (T = 1)": ev.reliability(raw, targets),
            f"after (T = {temperature:.2f})": ev.reliability(calibrated, targets),
        },
        out_dir / RELIABILITY_PNG,
    )
    plot_roc(calibrated, targets, class_names, out_dir / ROC_PNG)
    cis = ev.bootstrap(calibrated, targets, groups, n_resamples=resamples)

    def interval(key: str) -> dict[str, float | None]:
        return {k: _clean(v) for k, v in cis[key].items()}

    return {
        "calibration": {
            "temperature": temperature,
            "test_ece_before": _clean(ev.ece(raw, targets)),
            "test_ece_after": _clean(ev.ece(calibrated, targets)),
            "test_nll_before": _clean(ev.nll(logits, targets)),
            "test_nll_after": _clean(ev.nll(logits, targets, temperature)),
            "ece_bins": ev.ECE_BINS,
        },
        "confidence_intervals": {
            "method": f"percentile bootstrap, {resamples} resamples of near-duplicate groups (not images)",
            "level": 0.95,
            "n_images": len(targets),
            "n_groups": len(set(groups)),
            "accuracy": interval("accuracy"),
            "auroc": interval("auroc"),
            "ece": interval("ece"),
        },
        "per_class": {
            name: {rate: interval(f"{rate}/{c}") for rate in ev.RATES} for c, name in enumerate(class_names)
        },
        "figures": [RELIABILITY_PNG, ROC_PNG],
    }


def operating_point_line(metrics: Mapping[str, Any]) -> str:
    """One line on the screening operating point and what it gave on the test split.

    ``metrics``: what the test wrote to ``metrics.json`` (:attr:`TestReport.metrics`).
    """
    point = metrics.get("operating_point")
    if not point:
        return "operating point: none (no negative class to screen against)"
    test = point.get("test", {})

    def pct(name: str) -> str:
        block = test.get(name) or {}
        if block.get("value") is None:
            return "n/a"
        low, high = block.get("low"), block.get("high")
        ci = f" (95 % CI {low:.1%}-{high:.1%})" if low is not None and high is not None else ""
        return f"{block['value']:.1%}{ci}"

    return (
        f"operating point: P(not {point['negative_class']}) >= {point['threshold']:.4f}, chosen on "
        f"{point['chosen_on']} for sensitivity >= {point['target_sensitivity']:.0%}; test sensitivity "
        f"{pct('sensitivity')}, specificity {pct('specificity')}"
    )
