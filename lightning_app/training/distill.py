"""Knowledge distillation: one network trained towards an ensemble's calibrated probabilities.

The seed ensemble ``make cv`` chose costs its number of members in every served answer
(docs/cv_study.md). Distillation trains ONE network of any backbone with the loss

    (1 - weight) * CE(student, label) + weight * CE(student, teacher probabilities)

where the teacher is the mean of the given runs' temperature-scaled probabilities on the
same augmented training batch (Hinton et al. 2015 at temperature 1: the members are
already calibrated). Validation, checkpoint choice, calibration and test are the plain
recipe's; the teachers are not saved in the student's checkpoint.

Held out stays held out: every teacher must have trained on the student's split (the same
data, split seed and CV fold, :func:`lightning_app.training.recorded.split_differences`),
so no teacher has seen a scan the student is tested on. In ``make cv`` a teacher path may
name the fold as ``{fold}`` (``runs/cv/default/fold_{fold}``), so each fold's student learns
from that fold's teachers. As a lever (``configs/levers/distill.yaml``)::

    make cv CV_NAME=distill CONFIG="configs/default.yaml configs/levers/distill.yaml"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from lightning_app.errors import ConfigError
from lightning_app.models.classifier import Classifier
from lightning_app.training.recorded import SAME_TASK, split_differences, trained_on
from lightning_app.training.runs import NoCheckpointError, newest_checkpoint


class Distill(Callback):
    """Blend the training loss with cross-entropy to the teachers' mean calibrated probabilities.

    Args:
        teachers: run directories (or folders of runs, or checkpoints) whose newest best
            checkpoint teaches; ``{fold}`` is replaced by the student's ``data.cv_fold``.
        weight: the share of the teacher's term in the loss, in ``(0, 1]``.

    """

    def __init__(self, teachers: list[str], weight: float = 0.5) -> None:
        if not teachers:
            raise ConfigError("Distill needs at least one teacher run")
        if not 0 < weight <= 1:
            raise ConfigError(f"Distill weight {weight} must be in (0, 1]")
        self.teachers, self.weight = list(teachers), weight
        self.members: list[Classifier] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Load and check the teachers before the first step (fit only)."""
        if stage != "fit":
            return
        student = dict(getattr(getattr(trainer, "datamodule", None), "hparams", {}))
        paths = [self._checkpoint(t, student.get("cv_fold")) for t in self.teachers]
        for path in paths:
            if differ := split_differences(student, trained_on(path)):
                raise ConfigError(
                    f"teacher {path} was trained on another split ({', '.join(differ)}): "
                    "it may have seen the scans this run is tested on"
                )
        self.members = [Classifier.load_from_checkpoint(p, map_location="cpu").eval() for p in paths]
        for path, member in zip(paths, self.members, strict=True):
            if differ := [k for k in SAME_TASK if member.hparams.get(k) != pl_module.hparams.get(k)]:
                raise ConfigError(f"teacher {path} differs from the student in {', '.join(differ)}")
            member.requires_grad_(False)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Put the teachers beside the student and hand it the blended loss."""
        for member in self.members:
            member.to(pl_module.device)
        cast(Classifier, pl_module).distill = self.blend

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The student's later stages (calibration, test) are the plain recipe's."""
        cast(Classifier, pl_module).distill = None
        self.members = []

    @torch.no_grad()
    def teach(self, images: torch.Tensor) -> torch.Tensor:
        """The teachers' mean calibrated probabilities ``[N, num_classes]`` for a batch."""
        return torch.stack([m.probabilities(m(images)) for m in self.members]).mean(dim=0)

    def blend(self, loss: torch.Tensor, logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """``(1 - weight) * loss + weight * CE(logits, teacher probabilities)``."""
        soft = nn.functional.cross_entropy(logits.float(), self.teach(images))
        return (1 - self.weight) * loss + self.weight * soft

    @staticmethod
    def _checkpoint(teacher: str, fold: Any) -> Path:
        if "{fold}" in teacher and fold is None:
            raise ConfigError(f"teacher {teacher!r} names a fold, but this run is not a CV fold")
        path = Path(teacher.replace("{fold}", str(fold)))
        if path.is_file():
            return path
        try:
            return newest_checkpoint(path, "best")
        except NoCheckpointError as exc:
            raise ConfigError(f"teacher: {exc}") from None
