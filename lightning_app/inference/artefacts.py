"""The names of the exported artefacts: the one place that defines them.

The export (:mod:`lightning_app.export`) writes these files into a model directory and
the ``.mar``; :class:`lightning_app.inference.engine.InferenceEngine` reads them back.
Optional artefacts (added by later export steps) are simply absent from older exports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: TorchServe model name and the archive's file stem.
MODEL_NAME = "brain_mri"
#: The backbone's plain ``state_dict`` (fp32), loadable under ``weights_only=True``.
WEIGHTS = "state_dict.pt"
#: ``{"0": "no_tumor", "1": "tumor"}``.
INDEX_TO_NAME = "index_to_name.json"
#: Backbone, classes, preprocessing, version, temperature and the export's measurements.
META = "model_meta.json"
#: ONNX graphs, written by the precision export step: fp32, and int8 (static QDQ, calibrated
#: on training images). Only the served one ships. Outputs (``inference/taps.py``): ``logits``,
#: ``features``, ``cam`` (the class-activation layer, CAM heads; since format 3) and the pooled
#: ``stage_<layer>`` statistics (backbones with stages; since format 3).
ONNX_FP32 = "model_fp32.onnx"
ONNX_INT8 = "model_int8.onnx"
#: PCA projection of the penultimate features (fitted on the train split) for prediction
#: logs: ``{"mean": [D], "components": [K, D], "explained_variance_ratio": [K]}`` (optional).
EMBEDDING_PCA = "embedding_pca.pt"
#: The monitoring reference: the prediction-log features of the train and val splits (optional).
REFERENCE_PROFILE = "reference_profile.npz"
#: Out-of-distribution statistics (per feature source: class means, shrunk precision,
#: standardisation; the combination rule and threshold): ``inference/ood.py``.
OOD_STATS = "ood_stats.pt"
#: Fewest training images of EVERY class for a class-wise OOD guard; with fewer, export fits one
#: pooled (class-agnostic) mean (:mod:`lightning_app.export.ood`), and the model card says so.
OOD_MIN_PER_CLASS = 5
#: Bumped when the layout of the exported files changes. 3: the ONNX graphs gained the ``cam``
#: and ``stage_*`` outputs and ``ood_stats.pt`` became a per-source ensemble. A format-2
#: export still loads: its guard reads ``features`` only, and explanations of its ONNX
#: graphs take a fp32 pass (no ``cam`` output).
FORMAT_VERSION = 3


def first_member(graph: str) -> str:
    """The name of an ensemble's first member's graph, shipped beside the served ``graph``.

    A cascade's first stage (:mod:`lightning_app.inference.cascade`): ``<stem>_first.onnx``,
    named in ``model_meta.json`` under ``backend.cascade.file``.
    """
    return graph.removesuffix(".onnx") + "_first.onnx"


def followers(graph: str) -> str:
    """The name of the graph of an ensemble's other members: ``<stem>_followers.onnx``.

    A cascade's second stage, named under ``backend.cascade.followers``.
    """
    return graph.removesuffix(".onnx") + "_followers.onnx"


def read_meta(model_dir: Path) -> dict[str, Any]:
    """Read ``model_meta.json`` from an exported model directory."""
    meta: dict[str, Any] = json.loads((Path(model_dir) / META).read_text())
    return meta


def class_names(model_dir: Path, meta: dict[str, Any]) -> list[str]:
    """Class names in index order, from ``index_to_name.json``."""
    index = json.loads((Path(model_dir) / INDEX_TO_NAME).read_text())
    return [str(index[str(i)]) for i in range(int(meta["num_classes"]))]
