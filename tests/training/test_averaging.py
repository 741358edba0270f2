"""Stochastic weight averaging (``EpochAveraging``): what validation, checkpoints and the end of fit see."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_app.cli import main
from lightning_app.training import predictions
from lightning_app.training.averaging import EpochAveraging
from lightning_app.training.tta import fold_tta
from tests.conftest import REPO, smoke_args


class Line(L.LightningModule):
    """y = w.x + b fitted by plain SGD; records the weights it trains and the weights it is validated with."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 1)
        self.trained: list[torch.Tensor] = []
        self.validated: list[torch.Tensor] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.fc(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> None:
        x, y = batch
        if index == 0:
            self.validated.append(self.fc.weight.detach().clone())
        self.log("val/loss", nn.functional.mse_loss(self.fc(x), y))

    def on_train_epoch_end(self) -> None:
        self.trained.append(self.fc.weight.detach().clone())  # after validation: the trained weights again

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _fit(tmp_path: Path, epochs: int, start: int) -> Line:
    torch.manual_seed(0)
    x = torch.randn(64, 2)
    data = DataLoader(TensorDataset(x, x @ torch.tensor([[2.0], [-1.0]]) + 0.5), batch_size=16)
    model = Line()
    ckpt = ModelCheckpoint(dirpath=tmp_path, monitor="val/loss", save_top_k=-1, filename="{epoch}")
    stop = EarlyStopping(monitor="val/loss", patience=2)  # trips if validation saw frozen weights
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=[ckpt, stop, EpochAveraging(start_epoch=start)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, data, data)
    return model


def _saved(tmp_path: Path, epoch: int) -> dict[str, dict[str, torch.Tensor]]:
    return torch.load(tmp_path / f"epoch={epoch}.ckpt", map_location="cpu", weights_only=False)


def test_validation_scores_the_trained_weights_then_their_running_mean(tmp_path: Path) -> None:
    """Each epoch's checkpoint holds exactly the weights its validation scored, so the one chosen on it is."""
    model = _fit(tmp_path, epochs=6, start=3)
    trained = model.trained
    assert len(trained) == len(model.validated) == 6, "early stopping tripped"
    for epoch, seen in enumerate(model.validated):
        expected = trained[epoch] if epoch < 3 else torch.stack(trained[3 : epoch + 1]).mean(0)
        assert torch.allclose(seen, expected, atol=1e-6), epoch
        assert torch.allclose(_saved(tmp_path, epoch)["state_dict"]["fc.weight"], seen, atol=1e-6), epoch
    mean = torch.stack(trained[3:]).mean(0)
    assert not torch.allclose(mean, trained[-1], atol=1e-4), "nothing moved: the test proves nothing"
    assert torch.allclose(model.fc.weight, mean, atol=1e-6)  # fit ends with the mean in the model


def test_a_run_shorter_than_the_start_keeps_its_trained_weights(tmp_path: Path) -> None:
    model = _fit(tmp_path, epochs=2, start=5)
    assert torch.allclose(model.fc.weight, model.trained[-1])
    saved = _saved(tmp_path, 1)
    assert "current_model_state" not in saved
    assert torch.allclose(saved["state_dict"]["fc.weight"], model.trained[-1])


def test_a_negative_start_is_refused() -> None:
    with pytest.raises(ValueError, match="start_epoch must be >= 0, got -1"):
        EpochAveraging(start_epoch=-1)


@pytest.mark.slow
def test_the_swa_lever_config_tests_and_ships_the_mean(small_br35h: Path, tmp_path: Path) -> None:
    """configs/levers/swa.yaml through the real CLI on real scans: the kept checkpoint holds the mean
    of the last epochs, not the trained weights, and the test stage scores exactly that mean."""
    lever = yaml.safe_load((REPO / "configs/levers/swa.yaml").read_text())
    lever["trainer"]["callbacks"][0]["init_args"] |= {"monitor": None, "mode": "min"}  # keep the newest
    lever["trainer"]["callbacks"][-1]["init_args"] = {"start_epoch": 1}
    (tmp_path / "swa.yaml").write_text(yaml.safe_dump(lever))
    extra = ("--config", str(tmp_path / "swa.yaml"), "--trainer.max_epochs", "3", "--trainer.logger", "false")
    main(["fit", *smoke_args(small_br35h, tmp_path, *extra)])
    run = tmp_path / "version_0"
    metrics = json.loads((run / "metrics.json").read_text())
    saved = torch.load(metrics["checkpoint"], map_location="cpu", weights_only=False)
    assert saved["epoch"] == 2
    raw, averaged = saved["current_model_state"], saved["state_dict"]
    assert any(not torch.equal(raw[k], averaged[k]) for k in raw), "SWA averaged nothing"
    shipped = fold_tta(run, views=("identity",))  # the checkpoint's own forward over the test split
    tested = predictions.read(run / predictions.FILE)
    assert shipped.paths == tested.paths and torch.allclose(shipped.probs, tested.probs, atol=1e-5)
