"""Distillation (``configs/levers/distill.yaml``): a student fit towards its teachers, on real scans,
through the real CLI; teachers from another split are refused before training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from lightning_app.cli import main as cli
from lightning_app.data.datamodule import ImageFolderDataModule
from lightning_app.models.classifier import Classifier
from lightning_app.training import assemble
from lightning_app.training.distill import Distill
from lightning_app.training.recorded import trained_on
from lightning_app.training.runs import newest_checkpoint

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def smoke_fit(data: Path, root: Path, *extra: str) -> Path | None:
    return cli(
        [
            "fit",
            "--config", str(REPO / "configs/smoke.yaml"),
            "--data.data_dir", str(data),
            "--data.cache_dir", str(root.parent / "cache"),
            "--trainer.default_root_dir", str(root),
            "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false",
            "--trainer.limit_train_batches", "4",
            *extra,
        ]
    )  # fmt: skip


def distill_config(path: Path, teacher: str, weight: float = 0.5) -> Path:
    """The smoke recipe's checkpoint callback plus Distill, as a lever file would add it."""
    smoke = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())["trainer"]["callbacks"]
    callback = {"class_path": "lightning_app.training.distill.Distill"}
    callback["init_args"] = {"teachers": [teacher], "weight": weight}  # type: ignore[assignment]
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": [*smoke, callback]}}))
    return path


@pytest.fixture(scope="module")
def fold_teachers(small_br35h: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<root>/fold_0``: a smoke run trained as outer fold 0 of 3, as ``make cv`` lays it out."""
    root = tmp_path_factory.mktemp("teachers")
    smoke_fit(small_br35h, root / "fold_0", "--data.cv_folds=3", "--data.cv_fold=0")
    return root


def test_a_fold_student_learns_from_that_folds_teacher_and_ships_without_it(
    fold_teachers: Path, small_br35h: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loss is blended on every training batch (a spy around the real ``blend``) and never
    in validation or test; the checkpoint holds the student alone."""
    taught: list[int] = []
    blend = Distill.blend

    def spy(self: Distill, loss: torch.Tensor, logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        taught.append(len(images))
        return blend(self, loss, logits, images)

    monkeypatch.setattr(Distill, "blend", spy)
    config = distill_config(tmp_path / "distill.yaml", str(fold_teachers / "fold_{fold}"))
    student = tmp_path / "student"
    smoke_fit(small_br35h, student, "--config", str(config), "--data.cv_folds=3", "--data.cv_fold=0")
    run = student / "version_0"
    assert (run / "metrics.json").is_file()  # fitted, calibrated and tested like any run
    datamodule = ImageFolderDataModule(**trained_on(newest_checkpoint(run)))
    datamodule.setup("fit")
    per_epoch = min(4, len(datamodule.train_dataloader()))  # smoke: 2 epochs of at most 4 batches
    assert len(taught) == 2 * per_epoch and sum(taught) == 2 * per_epoch * datamodule.hparams["batch_size"]
    saved = yaml.safe_load((run / "config.yaml").read_text())["trainer"]["callbacks"][-1]
    assert saved["init_args"]["teachers"] == [str(fold_teachers / "fold_{fold}")]
    ours = torch.load(newest_checkpoint(run), map_location="cpu", weights_only=False)["state_dict"]
    theirs = torch.load(newest_checkpoint(fold_teachers), map_location="cpu", weights_only=False)
    assert set(ours) == set(theirs["state_dict"])  # the same network's weights, no teacher inside
    assert Classifier.load_from_checkpoint(newest_checkpoint(run)).distill is None


@pytest.mark.parametrize(
    ("teacher", "student_split", "refusal"),
    [
        ("fold_0", ["--data.cv_folds=3", "--data.cv_fold=1"], "was trained on another split (cv_fold)"),
        ("fold_0", ["--data.seed=7", "--data.cv_folds=3", "--data.cv_fold=0"], "another split (seed)"),
        ("fold_0", [], "another split (cv_fold)"),
        ("fold_{fold}", [], "names a fold, but this run is not a CV fold"),
        ("fold_9", ["--data.cv_folds=3", "--data.cv_fold=0"], "teacher: no best-*.ckpt under"),
        (
            "fold_0",
            ["--data.cv_folds=3", "--data.cv_fold=0", "--data.image_size=48"],
            "differs from the student in preprocessing",
        ),
    ],
)
def test_a_teacher_that_may_have_seen_the_test_scans_is_refused_in_one_line(
    fold_teachers: Path,
    small_br35h: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    teacher: str,
    student_split: list[str],
    refusal: str,
) -> None:
    config = distill_config(tmp_path / "distill.yaml", str(fold_teachers / teacher))
    with pytest.raises(SystemExit) as exited:
        smoke_fit(small_br35h, tmp_path / "student", "--config", str(config), *student_split)
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: teacher") and refusal in err[-1]
    assert not list((tmp_path / "student").rglob("*.ckpt"))  # refused before the first step


def test_the_teacher_term_is_smallest_where_the_student_answers_the_teachers_probabilities(
    fold_teachers: Path,
) -> None:
    checkpoint = newest_checkpoint(fold_teachers)
    distill = Distill([str(fold_teachers)], weight=1.0)
    distill.members = [Classifier.load_from_checkpoint(checkpoint).eval()]
    datamodule = ImageFolderDataModule(**trained_on(checkpoint))  # the teacher's fold, as it was trained
    datamodule.setup("validate")
    images, _ = next(iter(datamodule.val_dataloader()))
    teacher = distill.teach(images)
    assert torch.allclose(teacher.sum(dim=1), torch.ones(len(images)))
    matched = teacher.log().requires_grad_()
    distill.blend(torch.tensor(0.0), matched, images).backward()
    assert matched.grad is not None and matched.grad.abs().max() < 1e-6  # the minimum: nothing to learn
    confident = torch.zeros_like(teacher)
    confident[:, 0] = 5.0
    confident.requires_grad_()
    distill.blend(torch.tensor(0.0), confident, images).backward()
    assert confident.grad is not None and confident.grad.abs().max() > 1e-3
    half = Distill([str(fold_teachers)], weight=0.5)
    half.members = distill.members
    blended = half.blend(torch.tensor(2.0), matched.detach(), images)
    assert blended == pytest.approx(
        0.5 * 2.0 + 0.5 * float(distill.blend(torch.tensor(0.0), matched.detach(), images))
    )


@pytest.mark.parametrize("weight", [0.0, 1.5])
def test_a_weight_outside_0_1_is_refused(weight: float) -> None:
    with pytest.raises(ValueError, match="must be in"):
        Distill(["runs/x"], weight=weight)


def test_ensemble_members_from_different_splits_are_refused(fold_teachers: Path, trained_run: Path) -> None:
    with pytest.raises(ValueError, match=r"trained on another split \(cv_fold\)"):
        assemble.run([trained_run, fold_teachers], fold_teachers / "ensemble")
    assert not (fold_teachers / "ensemble").exists()
