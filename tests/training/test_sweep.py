"""``make sweep``: Optuna over real CLI runs, offline; and the W&B sweep YAML's command line."""

from __future__ import annotations

import csv
import os
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from lightning_app.data import manifest
from lightning_app.training import cv, sweep, sweep_space
from lightning_app.training import predictions as pred
from tests.conftest import REPO

WANDB_YAML = REPO / "configs/sweeps/recipe.yaml"
TINY = [
    "--config", str(REPO / "configs/smoke.yaml"),
    "--set", "trainer.max_epochs=2", "--set", "trainer.limit_train_batches=2",
    "--set", "trainer.limit_val_batches=2", "--set", "data.image_size=32",
    "--set", "trainer.logger=false",
]  # fmt: skip


@pytest.mark.slow
def test_two_tiny_trials_end_to_end_offline_and_resumable(
    small_br35h: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exported = tmp_path / "study.csv"
    data = ["--set", f"data.data_dir={small_br35h}", "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    args = ["--name", "tiny", "--root", str(tmp_path / "sweeps"), "--csv", str(exported), *TINY, *data]
    assert sweep.main([*args, "--trials", "2"]) == 0
    out = capsys.readouterr().out
    assert "best by val/acc" in out and "| trial | state |" in out
    db = tmp_path / "sweeps" / "tiny" / "study.db"
    with sqlite3.connect(db) as conn:  # the study is a plain local SQLite file
        states = [s for (s,) in conn.execute("select state from trials order by number")]
    assert states == ["COMPLETE", "COMPLETE"]
    rows = list(csv.DictReader(exported.open()))
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE"]
    for row in rows:
        assert 0.0 <= float(row["value"]) <= 1.0
        run_dir = Path(row["run_dir"])
        assert (run_dir / "config.yaml").is_file()  # a real LightningCLI run
        assert list(run_dir.glob("checkpoints/best-*.ckpt"))
        assert not (run_dir / "metrics.json").exists()  # trials never look at the test split
    # resume: the same storage gets one more trial, the enqueued recipe first; a budget no
    # trial can meet prunes it after its first epoch. A fresh storage is seeded from the CSV.
    first = "model.backbone=small_cnn,model.lr=0.001"
    assert sweep.main([*args, "--trials", "3", "--enqueue", first, "--budget", "0.001"]) == 0
    rows = list(csv.DictReader(exported.open()))
    assert len(rows) == 3
    assert (rows[2]["state"], rows[2]["model.backbone"], rows[2]["model.lr"]) == (
        "PRUNED",
        "small_cnn",
        "0.001",
    )
    assert rows[2]["epochs"] == "1" and rows[2]["pruned"].startswith("over budget")
    fresh = ["--name", "tiny", "--root", str(tmp_path / "elsewhere"), "--csv", str(exported), *TINY, *data]
    assert sweep.main([*fresh, "--trials", "3"]) == 0
    assert "seeded with 3 trials" in capsys.readouterr().out


def test_the_space_is_read_from_the_wandb_sweep_yaml() -> None:
    spec = yaml.safe_load(WANDB_YAML.read_text())
    assert spec["metric"] == {"name": sweep.MONITOR, "goal": "maximize"}
    assert "${args}" in spec["command"] and spec["program"]
    expected = {  # the recipe space that make sweep has always searched
        "model.backbone": CategoricalDistribution(["resnet18", "small_cnn", "mobilenet_v3_small"]),
        "data.image_size": CategoricalDistribution([128, 160, 192, 224]),
        "trainer.max_epochs": IntDistribution(6, 16, step=2),
        "model.lr": FloatDistribution(3e-4, 1e-2, log=True),
        "model.weight_decay": FloatDistribution(1e-4, 0.1, log=True),
        "model.label_smoothing": FloatDistribution(0.0, 0.2),
        "data.augmentation": FloatDistribution(0.0, 2.0),
        "trainer.precision": CategoricalDistribution(["32-true", "bf16-mixed"]),
    }
    assert expected == sweep_space.SPACE
    assert list(sweep_space.SPACE) == list(spec["parameters"])


def test_a_parameter_without_an_optuna_twin_is_refused() -> None:
    with pytest.raises(ValueError, match="no Optuna equivalent"):
        sweep_space.distribution("model.lr", {"distribution": "normal", "mu": 0, "sigma": 1})
    with pytest.raises(ValueError, match="no Optuna equivalent"):
        sweep_space.distribution("x", {"distribution": "q_uniform", "min": 0.5, "max": 2, "q": 0.5})


@pytest.mark.slow
def test_wandb_sweep_command_line_is_accepted_by_the_cli(small_br35h: Path, tmp_path: Path) -> None:
    """Expand the YAML's command as the W&B agent does (${env}, ${interpreter}, ${args}) for one trial."""
    spec = yaml.safe_load(WANDB_YAML.read_text())
    params = spec["parameters"]
    chosen = {k: p["values"][-1] if "values" in p else p["max"] for k, p in params.items()}
    assert isinstance(chosen["trainer.max_epochs"], int)
    chosen |= {"model.backbone": "small_cnn", "data.image_size": 64}  # keep the one trial small
    args = [f"--{k}={v}" for k, v in chosen.items()]
    cmd: list[str] = []
    for part in spec["command"]:
        if part == "${env}":
            continue  # the agent puts /usr/bin/env here
        cmd += args if part == "${args}" else [sys.executable] if part == "${interpreter}" else [part]
    cmd = [c for c in cmd if not c.startswith("--trainer.default_root_dir")]
    cmd += [
        f"--trainer.default_root_dir={tmp_path}", f"--data.data_dir={small_br35h}",
        f"--data.cache_dir={tmp_path / 'cache'}", "--trainer.fast_dev_run=true", "--trainer.logger=false",
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline"}
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.slow
def test_a_cross_validated_study_scores_out_of_fold_prunes_between_folds_and_confirms(
    small_br35h: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exported, root = tmp_path / "cv.csv", tmp_path / "sweeps"
    data = ["--set", f"data.data_dir={small_br35h}", "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    space = ["--space", str(REPO / "configs/sweeps/recipe-cv.yaml"), "--resamples", "50"]
    args = ["--name", "tinycv", "--root", str(root), "--csv", str(exported), *space, *TINY, *data]
    assert sweep.main([*args, "--cv", "0,1", "--cv-folds", "3", "--trials", "1"]) == 0
    out = capsys.readouterr().out
    assert "best by cv/acc (folds 0,1 of 3)" in out and "| folds run |" in out
    (row,) = csv.DictReader(exported.open())
    assert (row["state"], row["folds"]) == ("COMPLETE", "2")
    # the value is the pooled accuracy of the two folds' own out-of-fold predictions
    trial = root / "tinycv" / "trial_000"
    parts = [pred.read(next((trial / f"fold_{k}").glob("version_*")) / pred.FILE) for k in (0, 1)]
    pooled = pred.pool(parts)
    assert float(row["value"]) == pytest.approx(
        float((pooled.probs.argmax(1) == pooled.targets).float().mean()), abs=1e-4
    )
    test_split = {r.path for r in manifest.read(small_br35h / manifest.MANIFEST_NAME) if r.split == "test"}
    assert pooled.paths and not set(pooled.paths) & test_split  # the test split is never scored
    # a budget no fold can meet prunes the next trial after its first fold
    assert sweep.main([*args, "--cv", "0,1", "--cv-folds", "3", "--trials", "2", "--budget", "0.001"]) == 0
    rows = list(csv.DictReader(exported.open()))
    assert (rows[1]["state"], rows[1]["folds"]) == ("PRUNED", "1") and rows[1]["pruned"].startswith(
        "over budget"
    )
    assert not (root / "tinycv" / "trial_001" / "fold_1").exists()
    printed = capsys.readouterr().out
    assert f"| 1 | pruned | (last fold {float(rows[1]['value']):.4f}) |" in printed  # not a pooled figure
    assert printed.index("| 0 | complete |") < printed.index("| 1 | pruned |")
    # the printed confirmation is `make cv` over all three folds, the screened two reused
    confirm = printed.split("confirm on all 3 folds: ")[1].splitlines()[0]
    assert confirm.startswith("python -m lightning_app.training.cv ")
    result = cv.main([*shlex.split(confirm)[3:], "--resamples", "50"])
    assert result["folds_run"] == [0, 1, 2] and capsys.readouterr().out.count("skipped") == 2
    # a study keeps the objective it was created with
    assert sweep.main([*args, "--trials", "3"]) == 2
    assert "maximises cv/acc (folds 0,1 of 3), not val/acc;" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("folds", "says"),
    [("0,x", "not a comma-separated list"), ("1,-2", "from 0"), ("0,5", "below --cv-folds 5")],
)
def test_folds_a_cv_study_cannot_score_are_refused_in_one_line(
    folds: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        sweep.main(["--name", "bad", "--root", str(tmp_path), "--cv", folds, "--cv-folds", "5"])
    assert exit_.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # refused before any study is made
