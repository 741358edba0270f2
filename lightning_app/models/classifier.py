"""The LightningModule: loss, per-stage metrics, optimiser and schedule around a backbone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import lightning as L
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)
from torchvision.transforms import v2

from lightning_app.errors import ConfigError
from lightning_app.models.backbones import build_backbone
from lightning_app.models.ensemble_names import members
from lightning_app.models.screening import DEFAULT_NEGATIVE, DEFAULT_TARGET

STAGES = ("train", "val", "test")


def stage_metrics(stage: str, num_classes: int) -> MetricCollection:
    """Accuracy, macro F1 and AUROC, logged as ``<stage>/<metric>``."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
            "auroc": MulticlassAUROC(num_classes, average="macro"),
        },
        prefix=f"{stage}/",
    )


class Classifier(L.LightningModule):
    """Image classifier over any backbone from :func:`build_backbone`.

    ``num_classes``, ``class_names`` and ``preprocessing`` are linked from the
    DataModule by the CLI and saved as hyper-parameters, so a checkpoint knows its
    classes and how its inputs were made. ``negative_class`` and ``target_sensitivity`` say
    which screening operating point to choose after fit (:mod:`lightning_app.models.screening`;
    none when the classes lack ``negative_class``); ``operating_threshold`` fixes its threshold
    instead (one chosen on ``make cv``'s out-of-fold predictions, named by ``operating_source``).
    ``mixup`` and ``cutmix`` are the Beta(alpha, alpha) strengths of batch mixing in training (0 is
    off; with both set, each batch draws one of them): the loss sees the mixed soft targets, the
    ``train/`` metrics the dominant image's label; validation and test never mix.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 2,
        class_names: list[str] | None = None,
        preprocessing: dict[str, Any] | None = None,
        in_channels: int = 1,
        weights: str | None = None,
        lr: float = 3e-3,
        weight_decay: float = 0.05,
        label_smoothing: float = 0.0,
        scheduler: str = "onecycle",
        warmup_fraction: float = 0.2,
        channels_last: bool = True,
        negative_class: str | None = DEFAULT_NEGATIVE,
        target_sensitivity: float = DEFAULT_TARGET,
        operating_threshold: float | None = None,
        operating_source: str | None = None,
        mixup: float = 0.0,
        cutmix: float = 0.0,
    ) -> None:
        super().__init__()
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(f"{len(class_names)} class names for {num_classes} classes")
        if scheduler not in ("onecycle", "cosine", "constant"):
            raise ConfigError(f"unknown scheduler {scheduler!r}; choose onecycle, cosine or constant")
        self.save_hyperparameters()
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        self.net = build_backbone(backbone, num_classes=num_classes, in_channels=in_channels, weights=weights)
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        mixers: list[nn.Module] = []
        if mixup > 0:
            mixers.append(v2.MixUp(alpha=mixup, num_classes=num_classes))
        if cutmix > 0:
            mixers.append(v2.CutMix(alpha=cutmix, num_classes=num_classes))
        self.mixer: nn.Module | None = v2.RandomChoice(mixers) if mixers else None
        self.metrics = nn.ModuleDict(
            {f"{stage}_metrics": stage_metrics(stage, num_classes) for stage in STAGES}
        )
        self.confusion = MulticlassConfusionMatrix(num_classes)
        # Fitted on the validation logits after fit (see lightning_app.training.evaluation); saved in the
        # checkpoint's state_dict and exported to model_meta.json. Probabilities = softmax(logits / T).
        self.register_buffer("temperature", torch.ones(()))
        # The screening operating point (lightning_app.models.screening), chosen on the
        # validation split with the temperature; kept in the checkpoint beside it.
        self.operating_point: dict[str, Any] | None = None
        #: Validation NLL/ECE before and after the temperature (set after fit, or from a checkpoint).
        self.calibration_info: dict[str, Any] = {}
        self.test_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        #: ``(loss, logits, images) -> loss`` for training batches, set by a distillation
        #: callback (:class:`lightning_app.training.distill.Distill`) for the length of a fit.
        self.distill: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
        self.example_input_array = torch.zeros(1, in_channels, 64, 64)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a normalised batch ``[N, C, H, W]``."""
        if self.hparams["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, targets = batch
        loss_targets = targets
        if stage == "train" and self.mixer is not None:
            images, loss_targets = self.mixer(images, targets)
            targets = loss_targets.argmax(dim=1)
        logits = self(images)
        loss = self.loss(logits, loss_targets)
        if stage == "train" and self.distill is not None:
            loss = self.distill(loss, logits, images)
        probs = self.probabilities(logits)
        metrics = cast(MetricCollection, self.metrics[f"{stage}_metrics"])
        metrics.update(probs, targets)
        on_step = stage == "train"
        self.log(
            f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=len(targets)
        )
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "train")
        if stage == "test":
            self.confusion.update(probs, targets)
            self.test_outputs.append((logits.detach().float().cpu(), targets.detach().cpu()))
        return loss

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated class probabilities: ``softmax(logits / temperature)``."""
        return (logits.float() / cast(torch.Tensor, self.temperature)).softmax(dim=1)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints from before temperature scaling load with ``T = 1``.

        The validation calibration numbers and the operating point fitted after ``fit`` come
        back too, so a later ``test`` run reports them as the fit's own test did.
        """
        checkpoint["state_dict"].setdefault("temperature", torch.ones(()))
        self.operating_point = checkpoint.get("operating_point")
        if checkpoint.get("calibration"):
            self.calibration_info = dict(checkpoint["calibration"])

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One optimisation step; also logs the learning rate."""
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Accumulate validation metrics."""
        self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Accumulate test metrics and the confusion matrix."""
        self._step(batch, "test")

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Calibrated class probabilities ``[N, num_classes]``."""
        return self.probabilities(self(batch[0]))

    def on_test_epoch_start(self) -> None:
        """Start each test run with an empty confusion matrix and no collected logits."""
        self.confusion.reset()
        self.test_outputs = []

    def configure_optimizers(self) -> Any:
        """AdamW, with a one-cycle or cosine schedule stepped per batch."""
        if members(self.hparams["backbone"]) is not None:
            raise ConfigError(
                f"backbone {self.hparams['backbone']!r} is an assembled ensemble: train its members "
                "and assemble them (make fit-ensemble), it is not trained as one network"
            )
        decay = [p for p in self.parameters() if p.ndim > 1]
        no_decay = [p for p in self.parameters() if p.ndim <= 1]
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams["weight_decay"]},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams["lr"],
        )
        if self.hparams["scheduler"] == "constant":
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        scheduler: torch.optim.lr_scheduler.LRScheduler
        if self.hparams["scheduler"] == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=self.hparams["lr"],
                total_steps=total,
                pct_start=self.hparams["warmup_fraction"],
            )
        else:
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
