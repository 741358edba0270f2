"""Arms of several training seeds: mean against mean, and an interval that holds seed variance."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_app.training import cv_compare
from tests.training.test_cv import fake_fold

N = 40
GROUPS = [f"g{i}" for i in range(N)]
TARGETS = [i % 2 for i in range(N)]


def run(root: Path, wrong: set[int]) -> Path:
    """A one-fold CV run whose model gets every image right except those in ``wrong``."""
    probs = [[0.1, 0.9] if (t == 1) != (i in wrong) else [0.9, 0.1] for i, t in enumerate(TARGETS)]
    fake_fold(root / "fold_0" / "version_0", probs, TARGETS, GROUPS)
    return root


def test_two_seed_arms_compare_mean_against_mean_and_the_interval_holds_the_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # base: one seed perfect, one seed wrong on half the images (a recipe with a large seed
    # spread); lever: both seeds wrong on the same quarter. Mean vs mean: 75 % vs 75 %.
    base = [run(tmp_path / "base42", set()), run(tmp_path / "base7", set(range(N // 2)))]
    lever = [run(tmp_path / f"lever{s}", set(range(N // 4))) for s in (42, 7)]
    result = cv_compare.compare(base, lever, resamples=200)
    assert result["run_accuracy"][str(base[1])] == pytest.approx(0.5)
    assert result["per_fold"][0]["diff"] == pytest.approx(0.0)
    acc = result["pooled_diff"]["accuracy"]
    assert acc["value"] == pytest.approx(0.0)
    # redrawing the base arm's seeds gives 100 % or 50 % on some resamples: +-25 points
    assert acc["low"] <= -0.2 and acc["high"] >= 0.2
    # one seed each: only scan sampling is left, a clearly narrower interval
    one = cv_compare.compare(base[0], lever[0], resamples=200)["pooled_diff"]["accuracy"]
    assert one["value"] == pytest.approx(-0.25)
    assert one["high"] - one["low"] < (acc["high"] - acc["low"]) - 0.1

    arg = lambda paths: ",".join(map(str, paths))
    cv_compare.main([arg(base), arg(lever), "--resamples", "50"])
    out = capsys.readouterr().out
    assert "groups and seeds resampled" in out and "pooled accuracy 50.0" in out
    assert (lever[0] / "compare_base42+base7.json").is_file()


def test_a_missing_run_is_refused_in_one_line(tmp_path: Path) -> None:
    run(tmp_path / "base", set())
    with pytest.raises(SystemExit, match=r"cv_compare: no finished fold in common"):
        cv_compare.main([str(tmp_path / "base"), f"{tmp_path / 'base'},{tmp_path / 'absent'}"])
