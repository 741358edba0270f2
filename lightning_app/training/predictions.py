"""Per-image test predictions, ``predictions.csv`` in a run directory (written after ``test``).

One line per test image, in loader order: ``path`` (relative to the data root), ``group``
(near-duplicate group id), ``label`` and ``predicted`` (class names) and one calibrated
probability column ``p_<class>`` per class. Cross-validation pools these files across folds
(:mod:`lightning_app.training.cv`); no torch model or Lightning is needed to read them.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lightning_app.data.atomic import write_atomic

FILE = "predictions.csv"
PREFIX = "p_"


@dataclass(frozen=True)
class Predictions:
    """Test predictions of one run (or several pooled): aligned per image."""

    paths: list[str]
    groups: list[str]
    targets: torch.Tensor  # int64 [N], index into class_names
    probs: torch.Tensor  # float64 [N, C], calibrated
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def write(path: Path, predictions: Predictions) -> None:
    """Write ``predictions`` as CSV, atomically (a reader never sees half a file)."""
    names = predictions.class_names
    predicted = predictions.probs.argmax(dim=1).tolist()

    def dump(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            out = csv.writer(handle, lineterminator="\n")
            out.writerow(["path", "group", "label", "predicted", *(PREFIX + n for n in names)])
            for i, (p, g) in enumerate(zip(predictions.paths, predictions.groups, strict=True)):
                probs = [f"{float(v):.6f}" for v in predictions.probs[i]]
                out.writerow([p, g, names[int(predictions.targets[i])], names[predicted[i]], *probs])

    write_atomic(path, dump)


def read(path: Path) -> Predictions:
    """Read a file written by :func:`write`."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        names = [f.removeprefix(PREFIX) for f in reader.fieldnames or () if f.startswith(PREFIX)]
        rows = list(reader)
    if not names:
        raise ValueError(f"{path} is not a predictions file (no {PREFIX}<class> columns)")
    return Predictions(
        paths=[r["path"] for r in rows],
        groups=[r["group"] for r in rows],
        targets=torch.tensor([names.index(r["label"]) for r in rows], dtype=torch.long),
        probs=torch.tensor(
            [[float(r[PREFIX + n]) for n in names] for r in rows], dtype=torch.float64
        ).reshape(len(rows), len(names)),
        class_names=names,
    )


def pool(parts: Sequence[Predictions]) -> Predictions:
    """Concatenate predictions of several runs (e.g. the out-of-fold predictions of every fold)."""
    if not parts:
        raise ValueError("nothing to pool")
    names = parts[0].class_names
    if any(p.class_names != names for p in parts):
        raise ValueError("predictions with different classes cannot be pooled")
    return Predictions(
        paths=[x for p in parts for x in p.paths],
        groups=[x for p in parts for x in p.groups],
        targets=torch.cat([p.targets for p in parts]),
        probs=torch.cat([p.probs for p in parts]),
        class_names=names,
    )
