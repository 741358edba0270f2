"""Export step: the embedding's PCA basis and the reference profile, shipped in the ``.mar``.

The profile is made of prediction-log records of the train and val splits, built by the
same code as the served log (:class:`~lightning_app.inference.predlog.PredictionLog` over
an :class:`~lightning_app.inference.engine.InferenceEngine` of the exported files, with the
precision the export recorded), so a window of production logs and the reference can be
compared column by column. The PCA basis is fitted on the train split's penultimate
features (``ctx.options["pca_dim"]``, default :data:`PCA_DIM`; ``make mar`` passes
``--pca-dim``, or ``MONITOR_PCA_DIM``, read by the export CLI). Each reference row carries
its near-duplicate group id from the split manifest (profile version 2), so the drift tests
can count distinct scans.
``model_meta.json["monitoring"]`` records the data version, the splits, their group counts
and the variance the components explain.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lightning_app.inference import artefacts
from lightning_app.inference.engine import InferenceEngine
from lightning_app.inference.features import Projection
from lightning_app.inference.predlog import PredictionLog
from lightning_app.inference.records import Request
from lightning_app.inference.settings import LogSettings
from lightning_app.monitor.table import GROUP, Table, save_profile

if TYPE_CHECKING:
    from lightning_app.export.context import ExportContext

#: Splits profiled; drift windows are compared with ``val`` by default (held out from training).
SPLITS = ("train", "val")
BATCH = 64
#: Components of the embedding's PCA basis unless ``ctx.options["pca_dim"]`` says otherwise.
PCA_DIM = 16


def pca_dim(options: dict[str, Any]) -> int:
    """Number of PCA components: ``options["pca_dim"]`` (at least 1), default :data:`PCA_DIM`."""
    chosen = options.get("pca_dim")
    return max(1, int(PCA_DIM if chosen is None else chosen))


def split_rows(data_dir: Any, split: str) -> list[Any]:
    """The manifest rows of one split, in the order :func:`~lightning_app.data.pixels.split_pixels` uses."""
    from lightning_app.data import manifest

    return manifest.split_rows(data_dir, split)


def profile_split(
    engine: InferenceEngine, log: PredictionLog, pixels: torch.Tensor, files: list[Any]
) -> list[dict[str, Any]]:
    """Prediction records of decoded ``pixels`` (facts read from ``files``), as the handler writes them."""
    records: list[dict[str, Any]] = []
    for start in range(0, len(pixels), BATCH):
        batch = pixels[start : start + BATCH]
        requests = [Request(i, files[start + i].read_bytes(), None, 0.0) for i in range(len(batch))]
        forward = engine.forward(batch)
        records += log.predictions(requests, batch, engine.answers(forward), 0.0, forward=forward)
    return records


def reference_step(ctx: ExportContext) -> None:
    """Fit the PCA basis on train features; write the train/val reference profile."""
    if ctx.data_dir is None:
        ctx.metadata["monitoring"] = {"reference": None, "why": "exported without training data (--data)"}
        return
    from lightning_app.training.runinfo import data_version

    # A provisional metadata file so the engine loads exactly what serving will load.
    (ctx.out_dir / artefacts.META).write_text(json.dumps(ctx.metadata))
    engine = InferenceEngine(ctx.out_dir)
    train, _ = ctx.pixels("train")
    features = np.concatenate([engine.forward(batch).features for batch in train.split(BATCH)])
    projection, explained = Projection.fit(features, pca_dim(ctx.options))
    pca_path = ctx.out_dir / artefacts.EMBEDDING_PCA
    torch.save({k: torch.from_numpy(v) for k, v in projection.state().items()}, pca_path)
    log = PredictionLog(engine, artefacts.MODEL_NAME, settings=LogSettings(), stream=io.StringIO())
    tables: dict[str, Table] = {}
    for split in SPLITS:
        pixels, labels = ctx.pixels(split)
        rows = split_rows(ctx.data_dir, split)
        table = Table.from_records(profile_split(engine, log, pixels, [ctx.data_dir / r.path for r in rows]))
        table.columns["label"] = np.asarray([engine.class_names[int(i)] for i in labels], dtype=str)
        table.columns[GROUP] = np.asarray([r.group for r in rows], dtype=str)
        tables[split] = table
    meta = {
        "model_version": ctx.metadata["version"],
        "data_version": data_version(ctx.data_dir),
        "class_names": engine.class_names,
        "splits": {split: len(t) for split, t in tables.items()},
        "groups": {split: len(set(t.columns[GROUP])) for split, t in tables.items()},
        "pca_dim": int(projection.components.shape[0]),
        "pca_explained_variance": round(float(explained.sum()), 4),
    }
    profile = save_profile(ctx.out_dir / artefacts.REFERENCE_PROFILE, tables, meta)
    ctx.files += [pca_path, profile]
    ctx.metadata["monitoring"] = {"reference": artefacts.REFERENCE_PROFILE, **meta}
