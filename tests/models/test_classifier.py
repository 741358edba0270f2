"""The LightningModule: metrics per stage, schedules, hyper-parameters, learning."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_app.models.classifier import Classifier


def loader(n: int = 64, classes: int = 3) -> DataLoader[tuple[torch.Tensor, ...]]:
    """Separable synthetic batches: class k has a bright k-th horizontal band."""
    torch.manual_seed(0)
    y = torch.arange(n) % classes
    x = torch.randn(n, 1, 24, 24) * 0.1
    for i, k in enumerate(y.tolist()):
        x[i, 0, 8 * k : 8 * k + 8] += 2.0
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)


@pytest.mark.parametrize("scheduler", ["onecycle", "cosine", "constant"])
def test_learns_and_logs_stage_metrics(scheduler: str) -> None:
    L.seed_everything(0)
    model = Classifier("small_cnn", num_classes=3, class_names=["a", "b", "c"], lr=1e-2, scheduler=scheduler)
    trainer = L.Trainer(max_epochs=10, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(model, loader(), loader())
    assert {"train/loss_epoch", "val/acc", "val/f1", "val/auroc", "train/acc", "train/lr"} <= set(
        trainer.callback_metrics
    )
    (result,) = trainer.test(model, loader(), verbose=False)
    assert set(result) == {"test/loss", "test/acc", "test/f1", "test/auroc"}
    assert result["test/acc"] > 0.9
    assert int(model.confusion.compute().sum()) == 64
    probs = torch.cat(trainer.predict(model, loader()))  # type: ignore[arg-type]
    assert torch.allclose(probs.sum(1), torch.ones(len(probs)))


def test_hparams_carry_classes_and_preprocessing() -> None:
    model = Classifier(
        "small_cnn", num_classes=2, class_names=["no", "yes"], preprocessing={"image_size": 64}
    )
    assert model.hparams["class_names"] == ["no", "yes"]
    assert model.hparams["preprocessing"] == {"image_size": 64}
    assert Classifier("small_cnn", num_classes=3).class_names == ["0", "1", "2"]


def test_inconsistent_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        Classifier("small_cnn", num_classes=3, class_names=["a", "b"])
    with pytest.raises(ValueError, match="unknown scheduler"):
        Classifier("small_cnn", scheduler="step")


def _is_original(rows: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
    """For each row of ``rows``, whether it equals one of ``originals``."""
    distance = torch.cdist(rows.flatten(1), originals.flatten(1), compute_mode="donot_use_mm_for_euclid_dist")
    return distance.min(dim=1).values < 1e-4


@pytest.mark.parametrize("mix", [{"mixup": 0.4}, {"cutmix": 1.0}, {"mixup": 0.4, "cutmix": 1.0}])
def test_batch_mixing_trains_and_never_touches_evaluation(mix: dict[str, float]) -> None:
    L.seed_everything(0)
    model = Classifier("small_cnn", num_classes=3, lr=1e-2, **mix)
    seen: list[tuple[bool, torch.Tensor]] = []
    model.net.register_forward_pre_hook(lambda _, args: seen.append((model.training, args[0].detach())))
    trainer = L.Trainer(max_epochs=10, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(model, loader(), loader())
    (result,) = trainer.test(model, loader(), verbose=False)
    assert result["test/acc"] > 0.9
    originals = loader().dataset.tensors[0]  # type: ignore[attr-defined]
    batches = [(training, x) for training, x in seen if x.shape[1:] == originals.shape[1:]]  # no summary
    trained = torch.cat([x for training, x in batches if training])
    evaluated = torch.cat([x for training, x in batches if not training])
    assert _is_original(evaluated, originals).all()
    assert _is_original(trained, originals).float().mean() < 0.5
