"""The LightningCLI entrypoint: wires a YAML config to objects, nothing more.

``python -m lightning_app fit --config configs/default.yaml`` trains, fits the temperature
on the validation split, then tests the best checkpoint on the held-out split. Every run
starts from ``configs/base.yaml``; ``--config`` files (several compose, later wins) and
dotted overrides (``--model.lr=1e-3``) go on top. Each run gets its own directory
``<trainer.default_root_dir>/version_<N>/`` holding ``config.yaml``,
``checkpoints/{best,last}.ckpt``, ``metrics.json``, ``confusion_matrix.png`` and the
W&B run; ``--ckpt_path last`` resumes the newest run in place.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from jsonargparse import Namespace
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from lightning_app.data.datamodule import ImageFolderDataModule
from lightning_app.errors import UserError
from lightning_app.models.classifier import Classifier
from lightning_app.training.calibration import fit_and_store, operating_point_line
from lightning_app.training.callbacks import TestReport
from lightning_app.training.runinfo import data_version, git_commit, wandb_mode
from lightning_app.training.runs import newest_checkpoint, next_run_dir, run_dir_of

#: The run directory chosen by rank 0, handed to the DDP worker processes it launches.
RUN_DIR_ENV = "BRAIN_MRI_RUN_DIR"
#: Overrides the base config loaded before every ``--config`` ("" for none).
BASE_CONFIG_ENV = "BRAIN_MRI_BASE_CONFIG"
SUBCOMMANDS = ("fit", "validate", "test", "predict")


def base_config() -> list[str]:
    """The base config every run starts from: ``configs/base.yaml`` beside the package.

    ``--config`` files are read on top of it, so they only say what differs.
    """
    override = os.environ.get(BASE_CONFIG_ENV)
    if override is not None:
        return [override] if override else []
    path = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"
    return [str(path)] if path.is_file() else []


class LoggedSaveConfig(SaveConfigCallback):
    """Save ``config.yaml`` in the run dir and log it, the commit and the data version."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Send the resolved config and provenance to every logger."""
        data_dir = Path(self.config.get("data", Namespace()).get("data_dir") or ".")
        info = {"git_commit": git_commit(), "data_version": data_version(data_dir)}
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": self.config.as_dict(), **info})


class BrainCLI(LightningCLI):
    """LightningCLI with data -> model links and per-run directories."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link data-derived values into the model; add ``--test_after_fit``."""
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        parser.link_arguments("data.preprocessing_config", "model.preprocessing", apply_on="instantiate")
        parser.add_argument(
            "--test_after_fit", type=bool, default=True, help="test the best checkpoint after fit"
        )

    def before_instantiate_classes(self) -> None:
        """Choose the run directory and point loggers and checkpoints into it."""
        config = self.config[self.subcommand]
        trainer = config.trainer
        root = Path(trainer.default_root_dir or "runs")
        ckpt = config.get("ckpt_path")
        if ckpt == "last":
            ckpt_file = newest_checkpoint(root, "last")
            config.ckpt_path = str(ckpt_file)
            run_dir = run_dir_of(ckpt_file) or ckpt_file.parent
        elif ckpt and run_dir_of(Path(ckpt)):
            run_dir = run_dir_of(Path(ckpt)) or Path(ckpt).parent
        elif os.environ.get("LOCAL_RANK", "0") != "0" and os.environ.get(RUN_DIR_ENV):
            run_dir = Path(os.environ[RUN_DIR_ENV])  # a DDP worker joins rank 0's run
        else:
            run_dir = next_run_dir(root)
        os.environ[RUN_DIR_ENV] = str(run_dir)  # inherited by the DDP workers Lightning starts
        trainer.default_root_dir = str(run_dir)
        loggers = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
        for logger in loggers:
            if isinstance(logger, Namespace) and "save_dir" in logger.get("init_args", {}):
                logger.init_args.save_dir = str(run_dir)
        for callback in trainer.callbacks or []:
            if callback.class_path.endswith("ModelCheckpoint") and not callback.init_args.get("dirpath"):
                callback.init_args.dirpath = str(run_dir / "checkpoints")

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        """Add the test report callback to every trainer."""
        trainer = super().instantiate_trainer(**kwargs)
        configs = [str(c) for c in self.config[self.subcommand].get("config") or []]
        self.report = TestReport(" ".join(configs) or None)
        trainer.callbacks.append(self.report)  # type: ignore[attr-defined]
        return trainer

    def after_fit(self) -> None:
        """Fit the temperature on the validation split, then test the best checkpoint."""
        if self.trainer.interrupted:
            return
        best = getattr(self.trainer.checkpoint_callback, "best_model_path", "")
        self._calibrate(best)
        if not self.config.fit.test_after_fit:
            return
        # A checkpoint written under EMA/SWA holds the averaged weights (what calibration and
        # export read); Lightning's WeightAveraging would reload the raw ones for the test.
        self.trainer.callbacks = [c for c in self.trainer.callbacks if not isinstance(c, WeightAveraging)]  # type: ignore[attr-defined]
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
        if self.trainer.is_global_zero:
            run_dir = Path(self.trainer.default_root_dir)
            print(f"run dir:    {run_dir}")
            print(f"checkpoint: {best or '(none saved)'}")
            print(f"config:     {run_dir / 'config.yaml'}")
            print(f"metrics:    {run_dir / 'metrics.json'}")
            print(operating_point_line(self.report.metrics))

    def _calibrate(self, best: str) -> None:
        """Temperature scaling on the best weights' validation logits, stored in the checkpoint."""
        if best:
            state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
            state.setdefault("temperature", torch.ones(()))
            self.model.load_state_dict(state)
        self.datamodule.setup("validate")
        info = fit_and_store(
            self.model, self.datamodule.val_dataloader(), best if self.trainer.is_global_zero else None
        )
        self.trainer.strategy.barrier("calibrated")  # every rank tests the rewritten checkpoint
        self.model.calibration_info = info
        if self.trainer.is_global_zero:
            nll, ece = (
                f"{info[f'val_{k}_before']:.4f} -> {info[f'val_{k}_after']:.4f}" for k in ("nll", "ece")
            )
            print(f"temperature: {info['temperature']:.3f} (validation NLL {nll}, ECE {ece})")


def main(args: list[str] | None = None) -> Path | None:
    """Run the CLI and return the run directory; user errors end with one line and exit code 2.

    W&B logs online when ``WANDB_API_KEY`` is set and ``WANDB_MODE`` is not
    (:func:`lightning_app.training.runinfo.wandb_mode`).
    """
    os.environ["WANDB_MODE"] = wandb_mode(os.environ)
    os.environ.setdefault("WANDB_SILENT", "true")
    # the sanity-check batches hold one class (the val split is ordered): AUROC says so, harmlessly
    warnings.filterwarnings("ignore", message="No (positive|negative) samples in targets")
    try:
        cli = BrainCLI(
            Classifier,
            ImageFolderDataModule,
            args=args,
            seed_everything_default=42,
            save_config_callback=LoggedSaveConfig,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={sub: {"default_config_files": base_config()} for sub in SUBCOMMANDS},
        )
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    root = getattr(getattr(cli, "trainer", None), "default_root_dir", None)
    return Path(root) if root else None
