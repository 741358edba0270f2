"""Callbacks that write a run's artefacts: ``metrics.json`` and the confusion matrix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from torchmetrics import Metric

from lightning_app.runinfo import data_version, git_commit


def plot_confusion(matrix: torch.Tensor, class_names: list[str], path: Path) -> None:
    """Save a confusion matrix (rows: true class, columns: predicted) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * n, 1.2 + 1.0 * n), dpi=100)
    ax.imshow(matrix.numpy(), cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=30, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = int(matrix.max()) or 1
    for i in range(n):
        for j in range(n):
            value = int(matrix[i, j])
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > top / 2 else "black")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


class TestReport(L.Callback):
    """After ``test``: write ``metrics.json`` and ``confusion_matrix.png`` to the run dir."""

    def __init__(self, config_path: str | None = None) -> None:
        self.config_path = config_path

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
            "checkpoint": trainer.ckpt_path,
            "config": self.config_path,
            "git_commit": git_commit(),
            "data_dir": str(data_dir),
            "data_version": data_version(data_dir),
        }
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("test/confusion_matrix", [str(png)])
