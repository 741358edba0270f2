"""One recipe at several seeds: each run's pooled metrics, their spread, the operating point's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_app.training import cv_seeds
from tests.training.test_cv import fake_fold

N = 40
GROUPS = [f"g{i}" for i in range(N)]
TARGETS = [i % 2 for i in range(N)]  # odd images are tumours


def run(root: Path, tumour_scores: dict[int, float], threshold: float | None = None) -> Path:
    """A one-fold CV run: P(tumor) 0.9 for tumours and 0.1 otherwise, except ``tumour_scores``."""
    probs = []
    for i, t in enumerate(TARGETS):
        score = tumour_scores.get(i, 0.9 if t else 0.1)
        probs.append([1 - score, score])
    fake_fold(root / "fold_0" / "version_0", probs, TARGETS, GROUPS)
    if threshold is not None:
        (root / "cv.json").write_text(json.dumps({"operating_point": {"threshold": threshold}}))
    return root


def test_three_seeds_give_mean_sd_range_and_the_shipped_thresholds_sensitivity_on_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # seed 42 ships threshold 0.5 and is perfect; seed 7 scores two tumours 0.3 (missed at 0.5);
    # seed 11 scores four tumours 0.3: 20 tumours, so sensitivity 100, 90, 80 at the shipped 0.5
    runs = [
        run(tmp_path / "s42", {}, threshold=0.5),
        run(tmp_path / "s7", {1: 0.3, 3: 0.3}),
        run(tmp_path / "s11", {1: 0.3, 3: 0.3, 5: 0.3, 7: 0.3}),
    ]
    result = cv_seeds.spread(runs)
    assert result["threshold"] == 0.5 and result["folds"] == [0]
    shipped = [r["shipped_sensitivity"] for r in result["runs"]]
    assert shipped == pytest.approx([1.0, 0.9, 0.8])
    accuracy = result["summary"]["accuracy"]
    assert accuracy["mean"] == pytest.approx((1.0 + 0.95 + 0.9) / 3)
    assert accuracy["sd"] == pytest.approx(0.05) and (accuracy["min"], accuracy["max"]) == (0.9, 1.0)
    # each run's own threshold for 97 % sensitivity moves down to 0.3 to keep its missed tumours
    assert [r["own_threshold"] for r in result["runs"]] == pytest.approx([0.9, 0.3, 0.3])
    assert all(r["own_specificity"] == 1.0 for r in result["runs"])  # clean scans score 0.1

    cv_seeds.main([",".join(map(str, runs)), "--json", str(tmp_path / "seeds.json")])
    out = capsys.readouterr().out
    assert "| mean +- SD | 95.0 +- 5.0 |" in out and "shipped threshold 0.5000" in out
    assert json.loads((tmp_path / "seeds.json").read_text())["runs"][2]["shipped_sensitivity"] == 0.8


def test_runs_without_a_common_fold_are_refused_in_one_line(tmp_path: Path) -> None:
    run(tmp_path / "a", {})
    with pytest.raises(SystemExit, match=r"^cv_seeds: no finished fold in common"):
        cv_seeds.main([f"{tmp_path / 'a'},{tmp_path / 'missing'}"])


def test_classes_without_no_tumor_get_the_metrics_and_no_operating_point_columns(tmp_path: Path) -> None:
    root = tmp_path / "cats"
    probs = [[0.8, 0.2] if t == 0 else [0.3, 0.7] for t in TARGETS]
    fake_fold(root / "fold_0" / "version_0", probs, TARGETS, GROUPS, class_names=["cat", "dog"])
    result = cv_seeds.spread([root])
    assert list(result["summary"]) == ["accuracy", "auroc", "sensitivity", "specificity", "ece"]
    assert result["runs"][0]["accuracy"] == 1.0
