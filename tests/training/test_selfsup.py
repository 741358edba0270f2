"""Self-supervised pretraining (``configs/levers/selfsup.yaml``) on real scans: it reads the
run's training split only, hands the fit its backbone, and caches per split and seed."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from lightning_app.data import manifest
from lightning_app.data.augment import ContrastiveView
from lightning_app.data.datamodule import ImageFolderDataModule
from lightning_app.errors import ConfigError
from lightning_app.models.classifier import Classifier
from lightning_app.training import selfsup
from lightning_app.training.selfsup import SelfSupervised, nt_xent

REPO = Path(__file__).resolve().parents[2]


def test_nt_xent_is_its_closed_form_when_views_agree_and_higher_when_partners_are_mixed() -> None:
    """Orthonormal embeddings, each view equal to its partner: every view scores ``1/T`` with
    its partner and 0 with the ``2N - 2`` others, so the loss is ``-log(e^(1/T) / (e^(1/T) + 2N - 2))``."""
    n, t = 4, 0.5
    a = torch.eye(n, 8)
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * n - 2))
    assert float(nt_xent(a, a.clone(), t)) == pytest.approx(expected, rel=1e-5)
    assert float(nt_xent(a, a[[1, 2, 3, 0]], t)) > expected + 1


def test_contrastive_views_are_two_different_crops_of_the_same_scan(small_br35h: Path) -> None:
    torch.manual_seed(0)
    cache = str(small_br35h.parent / "pixels")
    dm = ImageFolderDataModule(data_dir=str(small_br35h), image_size=64, cache_dir=cache)
    dm.setup()
    pixels = dm.datasets["train"].pixels[:6]
    view = ContrastiveView(mean=0.5, std=0.25, size=32)
    a, b = view(pixels), view(pixels)
    assert a.shape == b.shape == (6, 1, 32, 32) and a.dtype == torch.float32
    assert float(a.min()) >= -2 and float(a.max()) <= 2  # (x - 0.5) / 0.25 with x in [0, 1]
    assert not torch.allclose(a, b)


@pytest.fixture
def fold_module(small_br35h: Path, tmp_path: Path) -> tuple[SimpleNamespace, Classifier]:
    """A fit's pieces as Lightning hands them to a callback: outer fold 0 of 3, a small network."""
    dm = ImageFolderDataModule(
        data_dir=str(small_br35h), image_size=32, cache_dir=str(tmp_path / "pixels"), cv_folds=3, cv_fold=0
    )
    dm.setup("fit")
    model = Classifier(backbone="small_cnn", num_classes=2, preprocessing=dm.preprocessing_config)
    return SimpleNamespace(datamodule=dm), model


def test_pretraining_reads_the_training_split_only_and_the_fit_starts_from_it(
    fold_module: tuple[SimpleNamespace, Classifier], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pretrained weights are the network's at fit start, except the classification layer,
    which keeps its fresh initialisation; the scans read are the fold's inner training split."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "42")
    trainer, model = fold_module
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    SelfSupervised(epochs=2, batch_size=32, size=32, cache=str(tmp_path / "ssl")).setup(trainer, model, "fit")  # type: ignore[arg-type]
    [path] = (tmp_path / "ssl").glob("small_cnn-*.pt")
    saved = torch.load(path, weights_only=True)
    dm = trainer.datamodule
    train_rows = manifest.rows_of(dm.rows, "train")
    assert saved["images"] == len(train_rows) == len(dm.datasets["train"])
    assert {r.group for r in train_rows}.isdisjoint(r.group for r in manifest.rows_of(dm.rows, "test"))
    assert saved["key"]["split"]["cv_fold"] == 0 and len(saved["losses"]) == 2
    after = model.net.state_dict()
    head = {k for k in after if k.startswith("head.3.")}
    assert set(before) - set(saved["state_dict"]) == head
    assert all(torch.equal(after[k], saved["state_dict"][k]) for k in saved["state_dict"])
    assert all(torch.equal(after[k], before[k]) for k in head)
    assert not torch.equal(after["features.0.0.weight"], before["features.0.0.weight"])


def test_a_second_run_reuses_its_pretraining_and_another_seed_does_not(
    fold_module: tuple[SimpleNamespace, Classifier], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer, model = fold_module
    callback = SelfSupervised(epochs=1, batch_size=32, size=32, cache=str(tmp_path / "ssl"))
    monkeypatch.setenv("PL_GLOBAL_SEED", "42")
    callback.setup(trainer, model, "fit")  # type: ignore[arg-type]
    [first] = (tmp_path / "ssl").glob("*.pt")
    cached = torch.load(first, weights_only=True)["state_dict"]

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pretrained again although the cache matches")

    fresh = Classifier(backbone="small_cnn", num_classes=2, preprocessing=model.hparams["preprocessing"])
    with monkeypatch.context() as patch:
        patch.setattr(selfsup, "pretrain", refuse)
        callback.setup(trainer, fresh, "fit")  # type: ignore[arg-type]
    assert all(torch.equal(fresh.net.state_dict()[k], v) for k, v in cached.items())
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    callback.setup(trainer, fresh, "fit")  # type: ignore[arg-type]
    assert len(list((tmp_path / "ssl").glob("*.pt"))) == 2
    callback.setup(trainer, fresh, "validate")  # type: ignore[arg-type]  # only a fit pretrains
    assert len(list((tmp_path / "ssl").glob("*.pt"))) == 2


def test_too_few_training_scans_for_one_batch_are_refused_in_one_line(
    fold_module: tuple[SimpleNamespace, Classifier], tmp_path: Path
) -> None:
    trainer, model = fold_module
    with pytest.raises(ConfigError, match="needs at least 4096 training images"):
        SelfSupervised(epochs=1, batch_size=4096, cache=str(tmp_path)).setup(trainer, model, "fit")  # type: ignore[arg-type]
    assert not list(tmp_path.glob("*.pt"))


@pytest.mark.parametrize(
    "bad", [{"epochs": 0}, {"batch_size": 1}, {"lr": 0.0}, {"temperature": -1.0}, {"crop": 1.5}, {"size": 8}]
)
def test_settings_that_cannot_pretrain_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="SelfSupervised needs"):
        SelfSupervised(**bad)  # type: ignore[arg-type]


def test_the_lever_file_adds_the_callback_to_the_recipes_own() -> None:
    lever = yaml.safe_load((REPO / "configs/levers/selfsup.yaml").read_text())["trainer"]["callbacks"]
    base = yaml.safe_load((REPO / "configs/base.yaml").read_text())["trainer"]["callbacks"]
    assert lever[:-1] == base
    assert lever[-1]["class_path"] == "lightning_app.training.selfsup.SelfSupervised"
    SelfSupervised(**lever[-1]["init_args"])
