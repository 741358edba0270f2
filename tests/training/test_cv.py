"""``make cv``: pooled out-of-fold numbers, resume, and the random-label control that catches leaks."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from lightning_app.data import folds, manifest
from lightning_app.data.pixels import all_pixels
from lightning_app.data.validate import prepare
from lightning_app.training import cv, cv_compare, tta
from lightning_app.training import predictions as pred
from lightning_app.training.evaluation import bootstrap
from tests.conftest import REPO, copy_subset


@pytest.fixture(scope="module")
def br35h_600(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 real scans per class, prepared: enough near-duplicate groups for a leak to show."""
    root = copy_subset(tmp_path_factory.mktemp("br35h600") / "data", 300)
    assert prepare(root, seed=0).ok
    return root


def chance(ci: dict[str, float]) -> bool:
    """The pooled accuracy's 95 % CI holds 0.5 and is narrow enough to have excluded it."""
    return ci["low"] <= 0.5 <= ci["high"] and ci["high"] - ci["low"] < 0.3


def nearest_neighbour_oof(root: Path, split_of: list[int], labels: torch.Tensor) -> dict[str, float]:
    """Out-of-fold accuracy CI of a 1-nearest-neighbour memoriser (a leak's best friend)."""
    rows = manifest.read(root / manifest.MANIFEST_NAME)
    x = all_pixels(root, rows, image_size=32, cache_dir=root / ".cache").float().flatten(1)
    x = x - x.mean(dim=1, keepdim=True)
    x = x / x.norm(dim=1, keepdim=True)
    probs = torch.full((len(rows), 2), 0.01, dtype=torch.float64)
    used = [i for i, f in enumerate(split_of) if f >= 0]
    for k in set(split_of) - {-1}:
        test = torch.tensor([i for i in used if split_of[i] == k])
        train = torch.tensor([i for i in used if split_of[i] != k])
        nearest = (x[test] @ x[train].T).argmax(dim=1)
        probs[test, labels[train][nearest]] = 0.99
    index = torch.tensor(used)
    groups = [rows[i].group for i in used]
    return bootstrap(probs[index], labels[index], groups, n_resamples=300)["accuracy"]


def test_random_label_control_catches_folds_that_split_groups(br35h_600: Path) -> None:
    rows = folds.shuffle_labels(manifest.read(br35h_600 / manifest.MANIFEST_NAME), seed=1)
    names = sorted({r.label for r in rows})
    labels = torch.tensor([names.index(r.label) for r in rows])
    grouped = [-1] * len(rows)
    for k in range(3):
        for i, row in enumerate(folds.cv_view(rows, 3, k)):
            if row.split == "test":
                grouped[i] = k
    assert chance(nearest_neighbour_oof(br35h_600, grouped, labels))
    rng = random.Random(0)  # the same folds drawn per image: near-duplicates straddle them
    leaky = [rng.randrange(3) if r.split != "test" else -1 for r in rows]
    leaked = nearest_neighbour_oof(br35h_600, leaky, labels)
    assert not chance(leaked) and leaked["low"] > 0.55


def fake_fold(
    run_dir: Path,
    probs: list[list[float]],
    targets: list[int],
    groups: list[str],
    class_names: tuple[str, ...] | list[str] = ("no_tumor", "tumor"),
) -> Path:
    run_dir.mkdir(parents=True)
    pred.write(
        run_dir / pred.FILE,
        pred.Predictions(
            [f"x/{g}_{i}.jpg" for i, g in enumerate(groups)],
            groups,
            torch.tensor(targets),
            torch.tensor(probs, dtype=torch.float64),
            list(class_names),
        ),
    )
    return run_dir


def test_pooling_reads_every_fold_and_reports_mean_sd_and_ci(tmp_path: Path) -> None:
    a = fake_fold(
        tmp_path / "fold_0/version_0", [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], [0, 1, 1], ["a", "b", "c"]
    )
    b = fake_fold(tmp_path / "fold_1/version_0", [[0.7, 0.3], [0.1, 0.9]], [0, 1], ["d", "e"])
    assert pred.read(a / pred.FILE).probs.shape == (3, 2)
    assert cv.finished(tmp_path / "fold_0") == a and cv.finished(tmp_path / "fold_9") is None
    result = cv.pool_folds([a, b], tmp_path, resamples=50)
    assert [f["accuracy"] for f in result["folds"]] == pytest.approx([2 / 3, 1.0])
    assert result["pooled"]["accuracy"]["value"] == pytest.approx(4 / 5)
    assert result["pooled"]["sensitivity"]["value"] == pytest.approx(2 / 3)  # tumour: 2 of 3
    assert result["mean_sd"]["accuracy"]["mean"] == pytest.approx(5 / 6)
    assert result["n_groups"] == 5 and result["positive_class"] == "tumor"
    table = cv.table(result)
    assert table.count("\n") == 6 and "pooled (95 % CI)" in table
    assert (tmp_path / "roc_curve.png").is_file() and (tmp_path / "reliability_diagram.png").is_file()
    # tumour scores 0.8, 0.4, 0.9 out of fold: sensitivity >= 97 % needs the threshold at 0.4
    point = result["operating_point"]
    assert point["threshold"] == pytest.approx(0.4) and point["chosen_on"] == "out-of-fold (make cv)"
    assert (point["sensitivity"], point["specificity"]) == (1.0, 1.0)
    assert result["fold_operating_points"] == [None, None]  # these folds' runs wrote no metrics.json
    (a / "metrics.json").write_text(
        json.dumps({"operating_point": {"threshold": 0.5, "test": {"sensitivity": {"value": 0.5},
                                                                  "specificity": {"value": 1.0}}}})
    )  # fmt: skip
    lines = cv.operating_point_lines(cv.pool_folds([a, b], tmp_path, resamples=10))
    assert lines[0].startswith("operating point on the pooled out-of-fold scans: P(not no_tumor) >= 0.4000")
    assert lines[1] == (
        "fold 0: its threshold 0.5000 (chosen on validation) gives sensitivity 50.0%, specificity 100.0% "
        "on the held-out fold"
    )
    fixed = {"threshold": 0.13, "chosen_on": "out-of-fold", "test": {"sensitivity": {"value": 0.9}}}
    (a / "metrics.json").write_text(json.dumps({"operating_point": fixed | {"test": {
        "sensitivity": {"value": 0.9}, "specificity": {"value": 0.8}}}}))  # fmt: skip
    lines = cv.operating_point_lines(cv.pool_folds([a, b], tmp_path, resamples=10))
    assert lines[1].startswith("fold 0: its threshold 0.1300 (chosen on out-of-fold) gives sensitivity 90.0%")


def test_fold_command_is_a_plain_fit_of_the_recipe_on_one_fold(tmp_path: Path) -> None:
    cmd = cv.fold_command(["configs/default.yaml"], ["data.head_crop=true"], 5, 2, tmp_path / "fold_2")
    assert cmd[1:4] == ["-m", "lightning_app", "fit"] and "--data.head_crop=true" in cmd
    assert "--data.cv_folds=5" in cmd and "--data.cv_fold=2" in cmd
    assert f"--trainer.default_root_dir={tmp_path / 'fold_2'}" in cmd


@pytest.mark.slow
def test_make_cv_with_shuffled_labels_scores_chance_and_resumes(
    br35h_600: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "--name", "control", "--folds", "3", "--root", str(tmp_path), "--resamples", "300",
        "--config", str(REPO / "configs/smoke.yaml"),
        "--set", f"data.data_dir={br35h_600}", "--set", f"data.cache_dir={tmp_path / 'cache'}",
        "--set", "data.shuffle_labels=1", "--set", "trainer.logger=false",
        "--set", "trainer.max_epochs=3", "--set", "trainer.limit_train_batches=6",
    ]  # fmt: skip
    result = cv.main(args)
    out = tmp_path / "control"
    assert {"cv.json", "cv.md", "roc_curve.png", "reliability_diagram.png"} <= {p.name for p in out.iterdir()}
    assert chance(result["pooled"]["accuracy"]), result["pooled"]["accuracy"]
    held_out = {r.path for r in manifest.read(br35h_600 / manifest.MANIFEST_NAME) if r.split == "test"}
    pooled = pred.pool([pred.read(Path(f["run_dir"]) / pred.FILE) for f in result["folds"]])
    assert not set(pooled.paths) & held_out and len(set(pooled.paths)) == len(pooled.paths)
    capsys.readouterr()
    again = cv.main(args)  # resumes: every fold finished, nothing re-trained
    assert capsys.readouterr().out.count("skipped") == 3
    assert again["pooled"] == result["pooled"]
    # test-time augmentation re-scores each fold's held-out images with that fold's checkpoint
    own = {f["fold"]: pred.read(Path(f["run_dir"]) / pred.FILE) for f in result["folds"]}
    plain = tta.fold_tta(Path(result["folds"][0]["run_dir"]), views=("identity",))
    assert plain.paths == own[0].paths and torch.allclose(plain.probs, own[0].probs, atol=1e-4)
    flipped = tta.run(out, tmp_path / "control-tta")
    assert flipped["n_images"] == result["n_images"] and (tmp_path / "control-tta" / "cv.md").is_file()
    assert cv_compare.compare(out, tmp_path / "control-tta")["folds"], "TTA pairs with its source run"
    # the last checkpoint instead of the best, calibrated on the same inner validation split
    ended = tta.run(out, tmp_path / "control-last", ("identity",), "last")
    assert ended["checkpoint"] == "last" and cv_compare.compare(out, tmp_path / "control-last")["folds"]
    run0 = Path(result["folds"][0]["run_dir"])
    ckpts = {w: tta.fold_checkpoint(run0, w) for w in tta.CHECKPOINTS}
    epochs = {w: torch.load(path, weights_only=False)["epoch"] for w, path in ckpts.items()}
    last0 = pred.read(tmp_path / "control-last" / "fold_0" / "version_0" / pred.FILE)
    same = torch.allclose(last0.probs, own[0].probs, atol=1e-4)
    assert same == (epochs["best"] == epochs["last"]), epochs  # the same weights give the same answers
    (run0 / "checkpoints" / "last.ckpt").unlink()
    with pytest.raises(FileNotFoundError, match=r"last\.ckpt"):
        tta.run(out, tmp_path / "control-last2", ("identity",), "last")


def test_paired_comparison_lines_up_images_and_reports_differences(tmp_path: Path) -> None:
    groups = ["a", "b", "c", "d"]
    fake_fold(
        tmp_path / "base/fold_0/version_0",
        [[0.9, 0.1], [0.6, 0.4], [0.6, 0.4], [0.2, 0.8]],
        [0, 1, 1, 1],
        groups,
    )
    fake_fold(
        tmp_path / "lever/fold_0/version_0",
        [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]],
        [0, 1, 1, 1],
        groups,
    )
    result = cv_compare.compare(tmp_path / "base", tmp_path / "lever", resamples=50)
    assert result["folds"] == [0] and result["per_fold"][0]["diff"] == pytest.approx(0.25)
    assert result["pooled_diff"]["accuracy"]["value"] == pytest.approx(0.25)
    assert result["pooled_diff"]["sensitivity"]["value"] == pytest.approx(1 / 3)
    assert "+25.0 points" in cv_compare.describe(result)
    fake_fold(tmp_path / "other/fold_0/version_0", [[0.5, 0.5]], [0], ["z"])
    with pytest.raises(ValueError, match="different images"):
        cv_compare.compare(tmp_path / "base", tmp_path / "other")
