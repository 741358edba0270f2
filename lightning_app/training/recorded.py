"""What a checkpoint records beside its weights: the DataModule it was trained with.

LightningCLI saves the DataModule's hyper-parameters in every checkpoint
(``datamodule_hyper_parameters``). Export reads them to find the training data; the
ensemble and distillation steps read them to check that runs they combine were held out
from the same scans.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

#: The DataModule arguments that decide which scans a run trained on and which it held out.
SPLIT_KEYS = ("data_dir", "seed", "cv_folds", "cv_fold", "shuffle_labels")
#: The model hyper-parameters two networks share when they answer the same question about
#: the same input: the classes and their order, and the preprocessing and channels they see.
SAME_TASK = ("num_classes", "class_names", "preprocessing", "in_channels")


def trained_on(checkpoint: Path) -> dict[str, Any]:
    """The DataModule's hyper-parameters in a checkpoint (``data_dir``, ``class_map``...), ``{}`` if none.

    LightningCLI's private ``_instantiator`` entry is left out: it is not an argument. The
    weights are memory-mapped, not read: callers load the network from the same file next.
    """
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)
        recorded = dict(saved["datamodule_hyper_parameters"])
    except Exception:  # no datamodule recorded, or an unreadable file: export without data
        return {}
    return {k: v for k, v in recorded.items() if not k.startswith("_")}


def split_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The :data:`SPLIT_KEYS` on which two DataModule records disagree (``[]``: the same held-out scans).

    A fold of one split is ``cv_fold=None`` when the run used the manifest's own split, and
    ``cv_folds`` only matters when there is a fold.
    """
    keys = [k for k in SPLIT_KEYS if k != "cv_folds" or a.get("cv_fold") is not None]
    return [k for k in keys if _normal(k, a.get(k)) != _normal(k, b.get(k))]


def _normal(key: str, value: Any) -> Any:
    return os.path.normpath(value) if key == "data_dir" and isinstance(value, str) else value
