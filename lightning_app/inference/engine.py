"""Load an exported model directory and run it: uint8 pixels -> logits, features, answers.

One forward pass yields the logits, the penultimate features (the input of the final
``nn.Linear``), the pooled statistics of the backbone's stages and, when asked, the
class-activation layer's output (:mod:`lightning_app.inference.taps`), so explanations,
out-of-distribution scores and prediction logs all build on the same call. Probabilities
are ``softmax(logits / temperature)``; the temperature comes from the export (``1.0`` when
none was fitted).

Torch-free: pixels, forward outputs and answers are numpy arrays, and an export with an ONNX
graph is served by numpy, Pillow and ONNX Runtime alone. Only the eager fp32 backend needs
torch (:mod:`lightning_app.inference.eager`, imported when chosen); without torch it fails
with :class:`TorchMissingError`, one line that says so.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from lightning_app.inference import artefacts, colour
from lightning_app.inference.backends import PRECISIONS, cascade_of, load_backend, precision_of
from lightning_app.inference.forward import Backend, Forward, softmax
from lightning_app.inference.ood import OODGuard, annotate
from lightning_app.models.screening import OperatingPoint
from lightning_app.transforms import EvalPreset, Preprocessing, load


class TorchMissingError(RuntimeError):
    """A path that needs torch (eager backend, Grad-CAM) was asked for where torch is not installed."""


#: What needs the eager backend (the words of :class:`TorchMissingError`).
EAGER = "serving the eager fp32 backend (no ONNX graph in this export)"


def torch_missing(why: str) -> TorchMissingError:
    """The one-line error: ``why`` needs torch, which is not installed."""
    return TorchMissingError(
        f"{why} needs PyTorch, which is not installed here: "
        "serve an ONNX export (precision int8 or onnx-fp32), or install torch"
    )


def import_eager(why: str) -> Any:
    """The :mod:`~lightning_app.inference.eager` module, or :class:`TorchMissingError` naming ``why``."""
    try:
        from lightning_app.inference import eager
    except ImportError:
        raise torch_missing(why) from None
    return eager


def check_backend(model_dir: Path, precision: str | None = None) -> None:
    """Fail fast, before any worker starts, when ``model_dir`` needs torch and it is not installed.

    The eager backend serves an export without the chosen ONNX graph; this looks for torch
    without importing it (a server of ONNX exports never pays for it).
    """
    meta = artefacts.read_meta(Path(model_dir))
    chosen = precision_of(meta, precision)
    name = PRECISIONS[chosen]
    if name is not None and ((Path(model_dir) / name).is_file() or cascade_of(meta, chosen)):
        return
    try:
        found = importlib.util.find_spec("torch") is not None
    except ImportError:
        found = False
    if not found:
        raise torch_missing(EAGER)


class InferenceEngine:
    """An exported model, ready to answer: decode, forward, calibrated probabilities."""

    def __init__(self, model_dir: Path, *, threads: int | None = None, precision: str | None = None) -> None:
        """Load ``model_dir`` to serve with the caller's settings, never the environment's.

        ``threads`` (intra-op; ``None``/``0``: torch's default) and ``precision`` (``None``: the
        export's choice) come from the handler's
        :class:`~lightning_app.inference.settings.ServeSettings`.
        """
        self.model_dir = Path(model_dir)
        self.meta = artefacts.read_meta(self.model_dir)
        self.class_names = artefacts.class_names(self.model_dir, self.meta)
        self.version = str(self.meta["version"])
        self.temperature = float(self.meta.get("temperature", 1.0))
        #: The screening operating point (``None`` for exports without one).
        self.operating_point = OperatingPoint.from_dict(self.meta.get("operating_point"))
        self.preprocessing = Preprocessing(**self.meta["preprocessing"])
        self.normalise = EvalPreset(mean=self.preprocessing.mean, std=self.preprocessing.std)
        self.backend: Backend = load_backend(
            self.model_dir, self.meta, precision=precision, threads=threads
        ) or self._eager(threads)
        self.ood = OODGuard.load(self.model_dir)  # None for exports without OOD statistics
        #: The colour check's limit (:mod:`~lightning_app.inference.colour`; ``None``: none shipped).
        self.colour_limit: float | None = ((self.meta.get("ood") or {}).get("colour") or {}).get("limit")
        available = getattr(self.backend, "source_names", None)
        if self.ood is not None and available is not None:
            missing = [p.source for p in self.ood.parts if p.source not in available]
            if missing:
                raise ValueError(
                    f"{artefacts.OOD_STATS} reads feature source(s) {', '.join(missing)} that the "
                    f"{self.backend.name} backend does not output (mixed export versions?): "
                    "re-export the model (make mar)"
                )

    def _eager(self, threads: int | None) -> Backend:
        """The eager fp32 backend (needs torch: :class:`TorchMissingError` without it)."""
        eager = import_eager(EAGER)
        if threads:
            import torch

            torch.set_num_threads(threads)
        backend: Backend = eager.TorchBackend(
            eager.load_network(self.model_dir, self.meta), str(self.meta["backbone"])
        )
        return backend

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(channels, size, size)`` of one decoded image."""
        size = self.preprocessing.image_size
        return (int(self.meta["in_channels"]), size, size)

    def decode(self, data: bytes) -> np.ndarray:
        """Image bytes -> ``uint8 [1, S, S]`` through THE preprocessing (raises ``ImageDecodeError``)."""
        prep = self.preprocessing
        return load(data, image_size=prep.image_size, head_crop=prep.head_crop)

    def read(self, data: bytes) -> tuple[np.ndarray, float]:
        """:meth:`decode`'s pixels and the image's mean chroma (:func:`colour.read`).

        An export without the colour check pays nothing for it: its chroma reads 0, unmeasured.
        """
        if self.colour_limit is None:
            return self.decode(data), 0.0
        return colour.read(data, self.preprocessing)

    def forward(self, pixels: Any, *, cam: bool = False) -> Forward:
        """``uint8 [N, 1, S, S]`` -> logits and features (and the CAM layer's output if ``cam``)."""
        return self.backend(self.normalise(pixels), cam=cam)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities ``float64 [N, C]``: ``softmax(logits / T)``."""
        return softmax(logits, self.temperature)

    def answer(self, probs: np.ndarray) -> dict[str, Any]:
        """One image's answer: every class with its probability, most likely first.

        With an operating point, also its ``decision`` (the screening label and why).
        """
        values = probs.tolist()
        ranked = sorted(zip(self.class_names, values, strict=True), key=lambda p: -p[1])
        answer: dict[str, Any] = {
            "prediction": ranked[0][0],
            "probabilities": [{"label": name, "probability": p} for name, p in ranked],
            "version": self.version,
        }
        if self.operating_point is not None:
            answer["decision"] = self.operating_point.decide(self.class_names, values)
        return answer

    def answers(self, forward: Forward) -> list[dict[str, Any]]:
        """One answer per image of a forward pass, with its ``in_distribution`` block when known."""
        answers = [self.answer(row) for row in self.probabilities(forward.logits)]
        if self.ood is not None:
            for answer, block in zip(answers, self.ood.blocks(forward), strict=True):
                annotate(answer, block)
        return answers

    def predict(self, pixels: Any) -> list[dict[str, Any]]:
        """``uint8 [N, 1, S, S]`` -> one answer per image."""
        return self.answers(self.forward(pixels))

    def warm_up(self) -> None:
        """Run one blank image through the model so the first request is not slow."""
        self.forward(np.zeros((1, *self.input_shape), dtype=np.uint8))
