"""Figures of a test run: confusion matrix, reliability diagram, ROC curves (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(matrix: torch.Tensor, class_names: list[str], path: Path) -> None:
    """Save a confusion matrix (rows: true class, columns: predicted) as a PNG."""
    plt = _pyplot()
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


def plot_reliability(curves: dict[str, list[dict[str, float]]], path: Path) -> None:
    """Reliability diagram: accuracy against mean confidence per bin, one line per curve."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.4), dpi=100)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for label, bins in curves.items():
        used = [b for b in bins if b["count"]]
        ax.plot([b["confidence"] for b in used], [b["accuracy"] for b in used], marker="o", label=label)
    ax.set_xlabel("confidence (top class)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0.45, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_roc(probs: torch.Tensor, targets: torch.Tensor, class_names: list[str], path: Path) -> None:
    """One-vs-rest ROC curve of every class (both curves coincide for two classes)."""
    from torchmetrics.functional.classification import binary_auroc, binary_roc

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.4), dpi=100)
    classes = range(1, 2) if len(class_names) == 2 else range(len(class_names))
    for c in classes:
        is_c = (targets == c).long()
        if 0 < int(is_c.sum()) < len(is_c):
            fpr, tpr, _ = binary_roc(probs[:, c].float(), is_c)
            auc = float(binary_auroc(probs[:, c].float(), is_c))
            ax.plot(fpr.numpy(), tpr.numpy(), label=f"{class_names[c]} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
