"""Lightning checkpoints for serving tests that need a model other than the trained one."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from lightning_app.models.classifier import Classifier

CLASSES_4 = ["glioma", "meningioma", "no_tumor", "pituitary"]


def untrained_checkpoint(path: Path, class_names: list[str], *, image_size: int = 64) -> Path:
    """A real Lightning checkpoint (as ``ModelCheckpoint`` writes it) of an untrained small CNN."""
    torch.manual_seed(0)
    model = Classifier(
        backbone="small_cnn",
        num_classes=len(class_names),
        class_names=class_names,
        preprocessing={"image_size": image_size, "mean": 0.5, "std": 0.25},
    )
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return path
