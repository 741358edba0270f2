"""The rules behind small data sets, without training: the OOD plan, degenerate covariances,
the parity gate's minimum, and the Kaggle split's class filling (real file names, no model)."""

from __future__ import annotations

from pathlib import Path

import torch

from lightning_app.data import manifest
from lightning_app.data.sources import Sample
from lightning_app.export.ood import MIN_PER_CLASS, fit_guard, ood_summary, plan_fit
from lightning_app.export.precision import judged_from
from lightning_app.inference.parity import ParityBounds


def test_the_plan_is_class_wise_pooled_or_none_by_the_split_sizes() -> None:
    names = ["a", "b", "c"]
    enough = torch.tensor([0] * 6 + [1] * 6 + [2] * 6)
    assert plan_fit(enough, names, n_val=8) == ("classwise", "")
    few = torch.tensor([0] * 10 + [1] * 6 + [2] * 2)
    plan, why = plan_fit(few, names, n_val=8)
    assert plan == "pooled" and f"fewer than {MIN_PER_CLASS} training images in c (2)" in why
    missing = torch.tensor([0] * 10 + [1] * 6)  # a class with no training image at all
    assert plan_fit(missing, names, n_val=8)[0] == "pooled"
    assert plan_fit(enough, names, n_val=2)[0] == "none"
    assert plan_fit(torch.tensor([0, 1, 2]), names, n_val=8)[0] == "none"


def test_a_degenerate_covariance_gives_no_guard_instead_of_a_traceback() -> None:
    identical = {"features": torch.ones(12, 8)}  # every image the same: a zero covariance
    assert fit_guard(identical, torch.zeros(12, dtype=torch.long), 1) is None
    empty_class = {"features": torch.randn(12, 8, generator=torch.Generator().manual_seed(0))}
    assert fit_guard(empty_class, torch.zeros(12, dtype=torch.long), 2) is None  # class 1: no image
    assert fit_guard(empty_class, torch.zeros(12, dtype=torch.long), 1) is not None


def test_the_summary_line_says_what_shipped() -> None:
    assert ood_summary({"fitted": False, "reason": "3 training images"}) == "none (3 training images)"
    assert ood_summary({"skipped": "no training data"}).startswith("none (no training data")
    pooled = ood_summary({"fitted": True, "pooled": True, "reason": "why", "threshold": 2.0})
    assert "pooled (why)" in pooled and "2.000" in pooled
    old = ood_summary({"method": "mahalanobis", "threshold": 1.5})  # an export from before this rule
    assert old == "mahalanobis, class-wise, threshold 1.500"
    checked = {"limit": 25.0, "val_flagged": 0.0, "test_flagged": 0.004}
    line = ood_summary({"fitted": True, "threshold": 9.0, "colour": checked})
    assert line.endswith(
        "; colour check: mean chroma > 25 grey levels is flagged (flagged val 0.0%, test 0.4%)"
    )
    off = {"limit": None, "val_flagged": 0.2, "test_flagged": None, "reason": "it would flag 20.0% of them"}
    assert ood_summary({"fitted": True, "threshold": 9.0, "colour": off}).endswith(
        "colour check off: it would flag 20.0% of them"
    )


def test_the_gate_is_judged_only_where_one_flip_does_not_fail_it() -> None:
    assert judged_from(ParityBounds()) == 400  # a 0.25-point accuracy drop is 1 image in 400
    assert judged_from(ParityBounds(min_agreement=0.99, max_accuracy_drop=0.05)) == 100


def test_a_kaggle_class_whose_groups_all_hashed_to_val_still_gets_a_training_group() -> None:
    samples = [Sample(f"Training/x/{i}.jpg", "x", "train") for i in range(3)]
    plan = [([s], f"g{i}", "val", 0.1 * i) for i, s in enumerate(samples)]
    manifest._fill_empty_splits(plan, {}, kaggle=True)
    splits = [sp for *_, sp, _ in plan]
    assert splits.count("train") == 1 and splits.count("val") == 2


def test_the_model_card_says_when_a_class_is_too_small_for_a_class_wise_guard(tmp_path: Path) -> None:
    from lightning_app.training.card_sections import Sources, _small_classes

    rows = [
        manifest.Row(f"{c}/{i}.jpg", c, "train", f"{c}{i}", f"{c}{i}")
        for c, n in (("a", 9), ("b", 3))
        for i in range(n)
    ]
    src = Sources(tmp_path, tmp_path, {}, {}, {}, rows)
    (line, *_) = _small_classes(src)
    assert f"fewer than {MIN_PER_CLASS} training images in b (3)" in line and "a (" not in line
    assert _small_classes(Sources(tmp_path, tmp_path, {}, {}, {}, rows[:9])) == []
