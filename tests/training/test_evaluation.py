"""Evaluation maths on synthetic logits where the right answer is known by construction."""

from __future__ import annotations

import math

import torch

from lightning_app.training import evaluation as ev


def sample(n: int, temperature: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose labels are drawn from softmax(logits / temperature): T is the truth."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 2, generator=generator) * 4
    targets = torch.multinomial((logits / temperature).softmax(dim=1), 1, generator=generator).flatten()
    return logits, targets


def test_fit_temperature_recovers_the_true_temperature_and_lowers_nll() -> None:
    logits, targets = sample(4000, temperature=2.5)
    fitted = ev.fit_temperature(logits, targets)
    assert 2.1 < fitted < 2.9
    assert ev.nll(logits, targets, fitted) < ev.nll(logits, targets)
    over = ev.ece(logits.softmax(dim=1), targets)
    after = ev.ece((logits / fitted).softmax(dim=1), targets)
    assert after < over / 2  # over-confident logits become calibrated
    assert ev.fit_temperature(torch.empty(0, 2), torch.empty(0, dtype=torch.long)) == 1.0


def test_class_rates_follow_the_confusion_matrix() -> None:
    # 10 tumours (class 1): 8 found; 20 healthy (class 0): 18 cleared, 2 false alarms
    targets = torch.tensor([1] * 10 + [0] * 20)
    preds = torch.tensor([1] * 8 + [0] * 2 + [0] * 18 + [1] * 2)
    healthy, tumour = ev.class_rates(preds, targets, 2)
    assert tumour == {"sensitivity": 0.8, "specificity": 0.9, "ppv": 0.8, "npv": 0.9}
    assert healthy["sensitivity"] == tumour["specificity"] and healthy["ppv"] == tumour["npv"]
    (only,) = ev.class_rates(torch.tensor([0]), torch.tensor([0]), 1)
    assert math.isnan(only["specificity"])  # no negatives: undefined, not 0


def test_bootstrap_by_group_is_wider_than_by_image_when_images_repeat() -> None:
    logits, targets = sample(60, temperature=1.0, seed=3)
    copies = 5  # every scan five times over, as near-duplicates are
    logits, targets = logits.repeat(copies, 1), targets.repeat(copies)
    probs = logits.softmax(dim=1)
    groups = [f"g{i % 60}" for i in range(len(targets))]
    by_group = ev.bootstrap(probs, targets, groups, n_resamples=300)
    by_image = ev.bootstrap(probs, targets, [str(i) for i in range(len(targets))], n_resamples=300)
    for key in ("accuracy", "auroc", "sensitivity/1"):
        g, i = by_group[key], by_image[key]
        assert g["low"] <= g["value"] <= g["high"]
        assert g["high"] - g["low"] > 1.5 * (i["high"] - i["low"])
    assert set(by_group) >= {f"{r}/{c}" for r in ev.RATES for c in (0, 1)} | {"ece"}


def test_reliability_bins_count_every_prediction() -> None:
    logits, targets = sample(500, temperature=1.0)
    bins = ev.reliability(logits.softmax(dim=1), targets)
    assert len(bins) == ev.ECE_BINS
    assert sum(b["count"] for b in bins) == 500
    assert all(0.0 <= b["accuracy"] <= 1.0 for b in bins)
