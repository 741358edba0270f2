"""Ensembles judged out of fold: members' probabilities averaged on the same held-out images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_app.inference.cascade import CascadeRule
from lightning_app.training import cv_compare, ensemble
from lightning_app.training import predictions as pred

GROUPS = ["a", "b", "c", "d"]
TARGETS = [0, 1, 1, 1]


def fold(root: Path, k: int, tumour: list[float], groups: list[str] = GROUPS) -> None:
    """A finished fold of a CV run: its out-of-fold predictions.csv."""
    run_dir = root / f"fold_{k}" / "version_0"
    run_dir.mkdir(parents=True)
    probs = torch.tensor([[1 - p, p] for p in tumour], dtype=torch.float64)
    paths = [f"x/{g}.jpg" for g in groups]
    targets = torch.tensor(TARGETS[: len(groups)])
    pred.write(run_dir / pred.FILE, pred.Predictions(paths, groups, targets, probs, ["no_tumor", "tumor"]))


def test_an_ensemble_of_two_runs_averages_each_image_and_pools_the_shared_folds(tmp_path: Path) -> None:
    # each member misses a different tumour; the average gets both right
    fold(tmp_path / "a", 0, [0.1, 0.9, 0.45, 0.8])
    fold(tmp_path / "b", 0, [0.2, 0.4, 0.75, 0.7])
    fold(tmp_path / "a", 1, [0.3, 0.6, 0.6, 0.6])  # only in one member: left out
    result = ensemble.run([tmp_path / "a", tmp_path / "b"], tmp_path / "ens")
    assert result["folds_run"] == [0] and result["n_images"] == 4
    assert result["pooled"]["accuracy"]["value"] == pytest.approx(1.0)
    averaged = pred.read(tmp_path / "ens" / "fold_0" / "version_0" / pred.FILE)
    assert averaged.probs[:, 1].tolist() == pytest.approx([0.15, 0.65, 0.6, 0.75])
    assert (tmp_path / "ens" / "cv.md").is_file()
    paired = cv_compare.compare(tmp_path / "a", tmp_path / "ens", resamples=20)
    assert paired["per_fold"][0]["diff"] == pytest.approx(0.25)


def test_members_that_held_out_different_images_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fold(tmp_path / "a", 0, [0.1, 0.9], groups=["a", "b"])
    fold(tmp_path / "b", 0, [0.1, 0.9], groups=["a", "z"])
    with pytest.raises(SystemExit, match="ensemble: ensemble members hold different images"):
        ensemble.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "ens")])
    with pytest.raises(SystemExit, match="no fold is finished in every one"):
        ensemble.main([str(tmp_path / "a"), str(tmp_path / "none"), "--out", str(tmp_path / "ens")])


def test_the_curve_summarises_every_subset_of_every_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # each run alone gets 3 of 4 right, each a different scan wrong; any two or three get all 4
    fold(tmp_path / "a", 0, [0.1, 0.9, 0.45, 0.8])
    fold(tmp_path / "b", 0, [0.2, 0.4, 0.75, 0.7])
    fold(tmp_path / "c", 0, [0.6, 0.9, 0.9, 0.9])
    fold(tmp_path / "c", 1, [0.6, 0.9, 0.9, 0.9])  # only in one run: left out
    rows = ensemble.curve([tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    assert [(r["members"], r["subsets"]) for r in rows] == [(1, 3), (2, 3), (3, 1)]
    assert [r["accuracy"]["mean"] for r in rows] == pytest.approx([0.75, 1.0, 1.0])
    assert rows[0]["accuracy"]["sd"] == pytest.approx(0.0) and rows[2]["auroc"]["mean"] == pytest.approx(1.0)
    ensemble.main([str(tmp_path / d) for d in "abc"] + ["--curve"])
    assert "| 2 | 3 | 100.0 +- 0.0 (100.0-100.0) |" in capsys.readouterr().out
    assert not (tmp_path / "ens").exists()


def cascade_runs(root: Path) -> list[Path]:
    """Three CV runs a, b, c of one fold; a is sure of scans 1 and 4 at 0.9 and wrong on scan 2."""
    for name, tumour in (
        ("a", [0.05, 0.45, 0.7, 0.97]),
        ("b", [0.2, 0.9, 0.6, 0.4]),
        ("c", [0.3, 0.8, 0.8, 0.1]),
    ):
        fold(root / name, 0, tumour)
    return [root / name for name in "abc"]


def test_a_cascade_keeps_the_first_runs_sure_answers_and_averages_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = [str(r) for r in cascade_runs(tmp_path)]
    ensemble.main([*runs, "--cascade", "0.9", "--out", str(tmp_path / "cascade")])
    combined = pred.read(tmp_path / "cascade" / "fold_0" / "version_0" / pred.FILE)
    # scans 1 and 4: run a alone (the plain mean would call scan 4 normal); 2 and 3: the mean
    assert combined.probs[:, 1].tolist() == pytest.approx([0.05, 0.7167, 0.7, 0.97], abs=1e-4)
    assert "50.0 % of scans deferred to all 3 runs; 2.00 forward passes per scan" in capsys.readouterr().out
    for sure, deferred in ((0.0, 0.0), (1.0, 1.0)):  # never: run a alone; always: the plain mean
        result = ensemble.run([Path(r) for r in runs], tmp_path / f"c{sure}", rule=CascadeRule(sure))
        cascade = result["cascade"]
        assert isinstance(cascade, dict)
        assert (cascade["deferred"], cascade["cost"]) == (deferred, 1 + 2 * deferred)
    assert pred.read(tmp_path / "c1.0" / "fold_0" / "version_0" / pred.FILE).probs[
        :, 1
    ].tolist() == pytest.approx([0.1833, 0.7167, 0.7, 0.49], abs=1e-4)
    with pytest.raises(SystemExit, match="a cascade needs a confidence in"):
        ensemble.main([*runs, "--cascade", "1.5", "--out", str(tmp_path / "bad")])
    assert not (tmp_path / "bad").exists()


def test_a_cascade_margin_defers_the_first_runs_sure_scores_near_the_ensembles_threshold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = cascade_runs(tmp_path)
    # the ensemble's 97 % threshold: its lowest tumour score, 0.49; run a's 0.05 lies 2.9 log-odds
    # from it (deferred at margin 3), its 0.97 lies 3.5 (kept)
    result = ensemble.run(runs, tmp_path / "m3", rule=CascadeRule(0.9, margin=3.0))
    combined = pred.read(tmp_path / "m3" / "fold_0" / "version_0" / pred.FILE)
    assert combined.probs[:, 1].tolist() == pytest.approx([0.1833, 0.7167, 0.7, 0.97], abs=1e-4)
    cascade = result["cascade"]
    assert isinstance(cascade, dict)
    assert cascade["deferred"] == 0.75 and cascade["threshold"] == pytest.approx(0.49)
    assert (
        cascade["decision_agreement"] == 1.0
        and cascade["sensitivity"] == cascade["ensemble_sensitivity"] == 1.0
    )
    # scan 4: run a's 0.97 is a tumour decision, as the ensemble's 0.49 is, but not its top-1 answer
    assert cascade["top1_agreement"] == 0.75
    ensemble.main([*map(str, runs), "--cascade", "0.9", "--margin", "3", "--out", str(tmp_path / "cli")])
    assert "decisions agree on 100.00 %, top-1 answers on 75.00 %" in capsys.readouterr().out
