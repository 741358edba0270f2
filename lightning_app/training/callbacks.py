"""Callbacks that write a run's artefacts: ``metrics.json`` and its figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from torchmetrics import Metric

from lightning_app.data.atomic import write_text
from lightning_app.training import predictions
from lightning_app.training.calibration import operating_point_report, report_extras
from lightning_app.training.plots import plot_confusion
from lightning_app.training.runinfo import data_version, git_commit

__all__ = ["TestReport", "plot_confusion"]


def _collected(pl_module: L.LightningModule) -> tuple[torch.Tensor, torch.Tensor]:
    outputs = list(getattr(pl_module, "test_outputs", []))
    if not outputs:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat([o[0] for o in outputs]), torch.cat([o[1] for o in outputs])


def _misclassified(
    datamodule: Any, logits: torch.Tensor, targets: torch.Tensor, temperature: float, names: list[str]
) -> list[dict[str, Any]]:
    """Every wrong test prediction: file, group, true and predicted class, calibrated confidence."""
    paths = datamodule.test_paths() if hasattr(datamodule, "test_paths") else []
    if len(paths) != len(targets):
        return []
    groups = datamodule.split_groups("test")
    probs = (logits / temperature).softmax(dim=1)
    wrong = torch.nonzero(probs.argmax(dim=1) != targets).flatten().tolist()
    return [
        {
            "path": Path(paths[i]).relative_to(datamodule.root).as_posix(),
            "group": groups[i],
            "true": names[int(targets[i])] if names else int(targets[i]),
            "predicted": names[int(probs[i].argmax())] if names else int(probs[i].argmax()),
            "confidence": round(float(probs[i].max()), 4),
        }
        for i in wrong
    ]


def _write_predictions(
    run_dir: Path,
    datamodule: Any,
    logits: torch.Tensor,
    targets: torch.Tensor,
    groups: list[str],
    temperature: float,
    names: list[str],
) -> None:
    """``predictions.csv``: every test image's file, group, label and calibrated probabilities."""
    paths = datamodule.test_paths() if hasattr(datamodule, "test_paths") else []
    if len(paths) != len(targets) or not names:
        return
    rel = [Path(p).relative_to(datamodule.root).as_posix() for p in paths]
    probs = (logits.double() / temperature).softmax(dim=1)
    predictions.write(
        run_dir / predictions.FILE, predictions.Predictions(rel, groups, targets.long(), probs, names)
    )


class TestReport(L.Callback):
    """After ``test``: ``metrics.json``, the confusion matrix, reliability diagram and ROC curve.

    ``metrics.json`` holds the logged test metrics, the calibration before/after temperature
    scaling, per-class sensitivity/specificity/PPV/NPV with 95 % group-bootstrap intervals,
    and provenance (config, commit, data version); ``predictions.csv`` every test image's
    calibrated probabilities (:mod:`lightning_app.training.predictions`).
    """

    def __init__(self, config_path: str | None = None) -> None:
        self.config_path = config_path
        #: What the last ``test`` wrote to ``metrics.json`` (rank 0; empty before a test).
        self.metrics: dict[str, Any] = {}

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Collect test metrics and provenance; write them once (rank 0)."""
        matrix = cast(Metric, pl_module.confusion).compute().cpu()  # a collective: every rank
        if not trainer.is_global_zero:
            return
        run_dir = Path(trainer.default_root_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        class_names = list(getattr(pl_module, "class_names", []))
        png = run_dir / "confusion_matrix.png"
        plot_confusion(matrix, class_names, png)
        datamodule = getattr(trainer, "datamodule", None)
        data_dir = Path(getattr(datamodule, "root", "."))
        metrics: dict[str, Any] = {
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")},
            "class_names": class_names,
            "confusion_matrix": matrix.tolist(),
        }
        logits, targets = _collected(pl_module)
        split_groups = getattr(datamodule, "split_groups", None)
        groups: list[str] = split_groups("test") if split_groups else []
        # One process saw the whole test split in manifest order (under DDP each rank sees a
        # strided share: the intervals are then left to a single-process `test` run).
        if trainer.world_size == 1 and len(targets) and len(groups) == len(targets):
            temperature = float(getattr(pl_module, "temperature", torch.ones(())))
            metrics.update(
                report_extras(
                    logits, targets, groups, temperature=temperature, class_names=class_names, out_dir=run_dir
                )
            )
            metrics["calibration"].update(getattr(pl_module, "calibration_info", {}))
            point = getattr(pl_module, "operating_point", None)
            if point:
                calibrated = (logits / temperature).softmax(dim=1)
                metrics["operating_point"] = operating_point_report(
                    point, calibrated, targets, groups, class_names
                )
            metrics["misclassified"] = _misclassified(datamodule, logits, targets, temperature, class_names)
            _write_predictions(run_dir, datamodule, logits, targets, groups, temperature, class_names)
        metrics |= {
            "checkpoint": trainer.ckpt_path,
            "config": self.config_path,
            "git_commit": git_commit(),
            "data_dir": str(data_dir),
            "data_version": data_version(data_dir),
        }
        write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        self.metrics = metrics
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                figures = [png, *(run_dir / f for f in metrics.get("figures", []))]
                logger.log_image("test/figures", [str(f) for f in figures])
