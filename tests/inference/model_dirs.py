"""Exported model directories (the files export writes) for in-process inference tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lightning_app.inference import artefacts
from lightning_app.models.backbones import build_backbone


def write_model_dir(
    root: Path,
    backbone: str = "small_cnn",
    class_names: tuple[str, ...] = ("no_tumor", "tumor"),
    size: int = 64,
) -> Path:
    """Random weights of ``backbone`` (seed 0), as :func:`lightning_app.export.export` lays them out."""
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = build_backbone(backbone, num_classes=len(class_names))
    torch.save(net.state_dict(), root / artefacts.WEIGHTS)
    (root / artefacts.INDEX_TO_NAME).write_text(json.dumps({str(i): n for i, n in enumerate(class_names)}))
    meta = {
        "version": "0123456789ab",
        "backbone": backbone,
        "num_classes": len(class_names),
        "in_channels": 1,
        "class_names": list(class_names),
        "preprocessing": {"image_size": size, "mean": 0.5, "std": 0.25},
    }
    (root / artefacts.META).write_text(json.dumps(meta))
    return root
