"""What the prediction log reads of an image and of its forward pass, beyond the answer.

* :func:`source_facts`: the source format, mode, width and height, read from the image
  header only (no second pixel decode), and the byte size;
* :func:`intensity`: the mean/std intensity of the preprocessed ``uint8`` pixels (scaled to
  ``[0, 1]``);
* :class:`Projection`: the PCA basis of the penultimate features, fitted on the train split
  at export (:data:`~lightning_app.inference.artefacts.EMBEDDING_PCA`);
* :func:`embeddings`: the feature tap, the compact embedding of the requests the log keeps,
  projected from the features of the forward pass that answered them (no second pass).

numpy only (the projection file is read by :mod:`~lightning_app.inference.ptfile`): the
torch-free server logs the same records.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lightning_app.inference import artefacts, ptfile
from lightning_app.inference.forward import Forward


def source_facts(data: bytes) -> dict[str, Any]:
    """Format, mode, width, height and byte size from the image header (no pixel decode)."""
    facts: dict[str, Any] = {"format": None, "mode": None, "width": None, "height": None, "bytes": len(data)}
    try:
        with Image.open(io.BytesIO(data)) as image:
            facts.update(format=image.format, mode=image.mode, width=image.width, height=image.height)
    except Exception:  # the decoder already accepted these bytes; facts stay unknown
        pass
    return facts


def intensity(pixels: Any) -> tuple[list[float], list[float]]:
    """Mean and std of each preprocessed ``uint8 [N, 1, S, S]`` image, scaled to ``[0, 1]``."""
    flat = np.asarray(pixels).reshape(len(pixels), -1)  # uint8: numpy reduces it without a float copy
    mean, std = flat.mean(axis=1, dtype=np.float64), flat.std(axis=1, dtype=np.float64)
    return (mean / 255.0).tolist(), (std / 255.0).tolist()


class Projection:
    """The PCA basis of the penultimate features: ``features [N, D] -> [N, K]``."""

    def __init__(self, mean: Any, components: Any) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.components = np.asarray(components, dtype=np.float32)

    @classmethod
    def load(cls, model_dir: Path) -> Projection | None:
        """The exported projection, or ``None`` for models exported without one."""
        path = Path(model_dir) / artefacts.EMBEDDING_PCA
        if not path.is_file():
            return None
        state = ptfile.load(path)
        return cls(state["mean"], state["components"])

    @classmethod
    def fit(cls, features: Any, dim: int) -> tuple[Projection, np.ndarray]:
        """Fit on ``features [N, D]``; returns the projection and its explained-variance ratios."""
        x = np.asarray(features, dtype=np.float64)
        mean = x.mean(axis=0)
        _, s, vh = np.linalg.svd(x - mean, full_matrices=False)
        k = min(dim, vh.shape[0])
        variance = s**2
        return cls(mean, vh[:k]), (variance[:k] / variance.sum()).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to save (the export writes them with ``torch.save`` as tensors)."""
        return {"mean": self.mean, "components": self.components}

    def __call__(self, features: Any) -> np.ndarray:
        """Project ``features [N, D]`` to ``[N, K]`` (a few microseconds of work)."""
        out: np.ndarray = (np.asarray(features, dtype=np.float32) - self.mean) @ self.components.T
        return out


def embeddings(
    projection: Projection | None, forward: Forward | None, keep: Sequence[int], batch: int
) -> list[list[float]] | None:
    """The embeddings of rows ``keep`` of a ``batch``-image forward pass (``None``: nothing to project).

    ``None`` without a projection (a model exported without one), without a forward pass, or
    when the pass is not the batch's (a different number of rows).
    """
    if projection is None or forward is None or len(forward.features) != batch:
        return None
    result: list[list[float]] = projection(forward.features[list(keep)]).tolist()
    return result
