"""Stochastic weight averaging over the ends of a run's last epochs (issue 18's SWA lever).

Izmailov et al. (2018) average the weights a run passes through late in training; the mean
sits in a flatter part of the loss than any one of them. Lightning's ``WeightAveraging``
does the bookkeeping (the averaged copy, the swap for validation, the checkpoint holding the
average) but swaps its copy in from the first epoch, when it still holds the initial weights:
validation would score a random network and early stopping would count those epochs. Here the
average is taken at each validation from ``start_epoch`` on, that epoch's weights included,
and until then validation, checkpoints and the end of training see the weights being trained.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import WeightAveraging

__all__ = ["EpochAveraging"]


class EpochAveraging(WeightAveraging):
    """The equal-weight mean of the weights (and BN buffers) at the end of each epoch from ``start_epoch``.

    Validation from ``start_epoch`` on scores the mean so far, so the checkpoint chosen on
    ``val/acc`` is a mean that was validated, and calibration, test and export use it.
    """

    def __init__(self, start_epoch: int = 6) -> None:
        if start_epoch < 0:
            raise ValueError(f"start_epoch must be >= 0, got {start_epoch}")
        super().__init__()  # use_buffers: the BN buffers are averaged with the weights
        self.start_epoch = start_epoch

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """Never from Lightning's hooks: the mean is taken when validation starts (below)."""
        return False

    @property
    def averaged(self) -> int:
        """How many epochs' weights the mean holds (0 before ``start_epoch``)."""
        return 0 if self._average_model is None else int(self._average_model.n_averaged)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Add this epoch's weights to the mean (once an epoch, not in the sanity check), then swap it in."""
        epoch = trainer.current_epoch
        due = epoch >= self.start_epoch and epoch > self._latest_update_epoch
        if due and trainer.state.fn == "fit" and not trainer.sanity_checking:
            assert self._average_model is not None
            self._average_model.update_parameters(pl_module)
            self._latest_update_epoch = epoch
        if self.averaged:
            self._swap_models(pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Put the trained weights back."""
        if self.averaged:
            self._swap_models(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Leave the mean in the model, if there is one."""
        if self.averaged:
            self._copy_average_to_current(pl_module)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Save the mean as the checkpoint's weights once there is one; the trained weights before that."""
        if self.averaged:
            super().on_save_checkpoint(trainer, pl_module, checkpoint)
