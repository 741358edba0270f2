"""The LightningCLI end to end on real images: artefacts, links, resume, errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lightning_app.cli import main
from lightning_app.data import manifest
from lightning_app.training import predictions
from lightning_app.training.tta import fold_tta
from tests.conftest import REPO, smoke_args


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run ``python -m lightning_app`` as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "lightning_app", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI in this process (fast: imports are warm); return (exit code, stdout, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_fit_writes_checkpoints_config_and_metrics(trained_run: Path, trained_checkpoint: Path) -> None:
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["class_names"] == ["no_tumor", "tumor"]
    assert {"test/acc", "test/f1", "test/auroc", "test/loss"} <= set(metrics["metrics"])
    assert metrics["metrics"]["test/acc"] > 0.6  # learnt something from 140 real training scans
    assert Path(metrics["checkpoint"]) == trained_checkpoint
    assert metrics["config"].endswith("smoke.yaml")
    assert metrics["data_version"].startswith("manifest:")
    assert re.match(r"^[0-9a-f]{40}(\+dirty)?$", metrics["git_commit"]), metrics["git_commit"]
    test_rows = [r for r in manifest.read(Path(metrics["data_dir"]) / "split.csv") if r.split == "test"]
    assert sum(map(sum, metrics["confusion_matrix"])) == len(test_rows)
    assert (trained_run / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    saved = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert saved["model"]["backbone"] == "small_cnn"
    hparams = torch.load(trained_checkpoint, map_location="cpu", weights_only=False)["hyper_parameters"]
    assert hparams["num_classes"] == 2
    assert hparams["class_names"] == ["no_tumor", "tumor"]
    assert hparams["preprocessing"] == {"image_size": 64, "mean": 0.5, "std": 0.25}


def test_fit_chooses_the_screening_operating_point_on_validation(
    trained_run: Path, trained_checkpoint: Path
) -> None:
    point = json.loads((trained_run / "metrics.json").read_text())["operating_point"]
    assert point["negative_class"] == "no_tumor" and point["chosen_on"] == "validation"
    assert point["sensitivity"] >= point["target_sensitivity"] == 0.97  # met where it was chosen
    assert 0.0 <= point["threshold"] <= 1.0
    for rate in ("sensitivity", "specificity"):  # and reported on test, with a group-bootstrap CI
        block = point["test"][rate]
        assert block["low"] <= block["value"] <= block["high"]
    saved = torch.load(trained_checkpoint, map_location="cpu", weights_only=False)["operating_point"]
    assert saved == {k: v for k, v in point.items() if k != "test"}


@pytest.mark.slow
def test_resume_from_last_continues_the_same_run(small_br35h: Path, tmp_path: Path) -> None:
    # A one-cycle schedule is planned for max_epochs; extending a run needs a schedule without an end.
    args = smoke_args(
        small_br35h,
        tmp_path,
        "--trainer.logger",
        "false",
        "--test_after_fit",
        "false",
        "--model.scheduler",
        "constant",
    )
    main(["fit", *args, "--trainer.max_epochs", "1"])
    last = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    first_step = torch.load(last, weights_only=False)["global_step"]
    main(["fit", *args, "--trainer.max_epochs", "2", "--ckpt_path", "last"])
    assert torch.load(last, weights_only=False)["global_step"] == 2 * first_step
    assert not (tmp_path / "version_1").exists()
    assert not (tmp_path / "version_0" / "metrics.json").exists()  # --test_after_fit false


@pytest.mark.slow
def test_wandb_runs_offline_and_logs_config_commit_and_data_version(
    small_br35h: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    result = cli(
        "fit",
        *smoke_args(small_br35h, tmp_path, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = (tmp_path / "version_0" / "wandb").glob("offline-run-*")
    (records,) = run.glob("run-*.wandb")  # offline runs keep the config in their record log
    logged = records.read_bytes()
    assert b"git_commit" in logged and b"manifest:" in logged and b"small_cnn" in logged


def test_print_config_shows_the_resolved_config(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(
        ["fit", "--config", str(REPO / "configs/default.yaml"), "--print_config"], capsys
    )
    assert code == 0, err
    config = yaml.safe_load(out)
    assert config["model"]["backbone"] == "resnet18"
    assert config["data"]["class_map"] == {"no": "no_tumor", "yes": "tumor"}


TRAINING_CONFIGS = sorted(
    p.relative_to(REPO / "configs").as_posix()
    for p in (REPO / "configs").rglob("*.yaml")
    if p.relative_to(REPO / "configs").parts[0] not in ("vertex", "sweeps", "monitoring")
)


@pytest.mark.parametrize("config", TRAINING_CONFIGS)
def test_every_shipped_config_parses(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(["fit", "--config", str(REPO / "configs" / config), "--print_config"], capsys)
    assert code == 0, err
    assert yaml.safe_load(out)["model"]["backbone"]


def test_configs_are_small_overrides_of_one_base_and_compose(capsys: pytest.CaptureFixture[str]) -> None:
    base = yaml.safe_load((REPO / "configs/base.yaml").read_text())
    for config in TRAINING_CONFIGS:
        if config != "base.yaml":  # an override says only what differs from the base
            lines = [ln for ln in (REPO / "configs" / config).read_text().splitlines() if ln.strip()]
            assert len([ln for ln in lines if not ln.lstrip().startswith("#")]) < 20, config
    args = ["fit", "--config", str(REPO / "configs/resnet18.yaml")]
    args += ["--config", str(REPO / "configs/overrides/bf16.yaml"), "--model.lr=0.001", "--print_config"]
    code, out, err = run_main(args, capsys)
    assert code == 0, err
    config = yaml.safe_load(out)
    assert base["trainer"]["precision"] != "bf16-mixed"
    assert config["trainer"]["precision"] == "bf16-mixed"  # from the second file
    assert config["model"]["lr"] == 0.001  # the dotted override wins last
    assert config["trainer"]["default_root_dir"] == "runs/resnet18"  # from the first
    assert config["data"]["image_size"] == 224  # from the first
    assert config["trainer"]["max_epochs"] == base["trainer"]["max_epochs"]  # from the base
    assert len(config["trainer"]["callbacks"]) == len(base["trainer"]["callbacks"])
    make = ["make", "-n", "--no-print-directory", "-o", "env", "-o", "data", "fit"]
    dry = subprocess.run(
        [*make, "CONFIG=configs/default.yaml configs/overrides/bf16.yaml"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "--config configs/default.yaml --config configs/overrides/bf16.yaml" in dry.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data.data_dir", "/definitely/not/here"], "error: data folder not found: /definitely/not/here"),
        (["--model.backbone", "resnet99"], "error: unknown backbone 'resnet99'"),
        (["--config", "configs/nope.yaml"], "nope.yaml"),
    ],
)
def test_bad_input_gives_one_clear_line(
    args: list[str],
    message: str,
    small_br35h: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO)
    data = ["--data.data_dir", str(small_br35h)]  # a later --data.data_dir overrides it
    config = ["--config", "configs/smoke.yaml", "--trainer.logger", "false", *data]
    code, _, err = run_main(["fit", *config, "--trainer.default_root_dir", str(tmp_path), *args], capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_config_typo_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "typo.yaml"
    config.write_text("model:\n  backbne: resnet18\n")
    code, _, err = run_main(["fit", "--config", str(config)], capsys)
    assert code == 2
    assert "backbne" in err and "Traceback" not in err


def test_resume_without_a_previous_run_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["fit", "--config", str(REPO / "configs/smoke.yaml"), "--trainer.default_root_dir", str(tmp_path)]
    code, _, err = run_main([*args, "--ckpt_path", "last"], capsys)
    assert code == 2
    assert "no last.ckpt under" in err


def test_make_fit_with_missing_config_file() -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", "fit", "CONFIG=configs/missing.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "error: config file not found: configs/missing.yaml" in result.stderr
    second = subprocess.run(
        ["make", "--no-print-directory", "fit", "CONFIG=configs/default.yaml configs/missing2.yaml"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode != 0 and "configs/missing2.yaml" in second.stderr


def test_package_is_ours_not_a_shadowing_install() -> None:
    import lightning_app

    assert Path(lightning_app.__file__).resolve().parent == REPO / "lightning_app"


@pytest.mark.slow
@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_other_subcommands_use_a_checkpoint_in_its_run_dir(
    subcommand: str, small_br35h: Path, trained_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        subcommand,
        "--config", str(REPO / "configs/smoke.yaml"),
        "--data.data_dir", str(small_br35h),
        "--data.cache_dir", str(trained_checkpoint.parents[2] / "cache"),
        "--trainer.logger", "false",
        "--ckpt_path", str(trained_checkpoint),
    ]  # fmt: skip
    code, out, err = run_main(args, capsys)
    assert code == 0, err
    if subcommand == "test":
        metrics = json.loads((trained_checkpoint.parents[1] / "metrics.json").read_text())
        assert Path(metrics["checkpoint"]) == trained_checkpoint
        # what fit calibrated on validation is reported again, read from the checkpoint
        assert metrics["calibration"]["val_nll_after"] <= metrics["calibration"]["val_nll_before"]
        assert metrics["operating_point"]["chosen_on"] == "validation"
    if subcommand == "validate":
        assert "val/acc" in out


@pytest.mark.slow
def test_fit_under_ema_tests_the_averaged_weights_it_ships(
    small_br35h: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under EMA the checkpoint holds the averaged weights, and the test stage scores exactly those.

    The fit ends with one line on the operating point, the one its ``metrics.json`` holds.
    """
    lever = yaml.safe_load((REPO / "configs/levers/ema.yaml").read_text())
    lever["trainer"]["callbacks"][-1]["init_args"] = {"decay": 0.5, "update_starting_at_epoch": 0}
    (tmp_path / "ema.yaml").write_text(yaml.safe_dump(lever))
    main(
        [
            "fit",
            *smoke_args(small_br35h, tmp_path, "--config", str(tmp_path / "ema.yaml")),
            "--trainer.logger",
            "false",
        ]
    )
    run = tmp_path / "version_0"
    point = json.loads((run / "metrics.json").read_text())["operating_point"]
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("operating point:"))
    assert line.startswith(
        f"operating point: P(not no_tumor) >= {point['threshold']:.4f}, chosen on validation"
    )
    assert f"test sensitivity {point['test']['sensitivity']['value']:.1%} (95 % CI" in line
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    saved = torch.load(best, map_location="cpu", weights_only=False)
    raw, averaged = saved["current_model_state"], saved["state_dict"]
    assert any(not torch.equal(raw[k], averaged[k]) for k in raw), "EMA averaged nothing"
    shipped = fold_tta(run, views=("identity",))  # the checkpoint's own forward over the test split
    tested = predictions.read(run / predictions.FILE)
    assert shipped.paths == tested.paths and torch.allclose(shipped.probs, tested.probs, atol=1e-5)
