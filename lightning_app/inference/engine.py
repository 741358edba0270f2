"""Load an exported model directory and run it: uint8 pixels -> logits, features, answers.

One forward pass yields the logits, the penultimate features (the input of the final
``nn.Linear``), the pooled statistics of the backbone's stages and, when asked, the
class-activation layer's output (:mod:`lightning_app.inference.taps`), so explanations,
out-of-distribution scores and prediction logs all build on the same call. Probabilities
are ``softmax(logits / temperature)``; the temperature comes from the export (``1.0`` when
none was fitted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_app.inference import artefacts
from lightning_app.inference.backends import load_backend
from lightning_app.inference.forward import Backend, Forward, forward_from
from lightning_app.inference.ood import OODGuard, annotate
from lightning_app.inference.taps import CAM, Tapped
from lightning_app.models.backbones import build_backbone
from lightning_app.models.screening import OperatingPoint
from lightning_app.transforms import EvalPreset, Preprocessing, load


class TorchBackend:
    """Eager fp32 PyTorch, channels-last, through :class:`Tapped` (every output in one pass)."""

    name = "fp32"

    def __init__(self, net: nn.Module, backbone: str | None = None) -> None:
        self.net = net.eval().to(memory_format=torch.channels_last)
        self.tapped = Tapped.for_backbone(self.net, backbone) if backbone else Tapped(self.net)
        self.has_cam = self.tapped.cam_layer is not None
        #: The feature sources each forward returns (``Forward.sources()`` keys).
        self.source_names = [n for n in self.tapped.output_names if n not in ("logits", CAM)]

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, *, cam: bool = False) -> Forward:
        """Run one batch; every output in ``float32``."""
        outputs = self.tapped(x.contiguous(memory_format=torch.channels_last))
        return forward_from(self.tapped.output_names, list(outputs), cam=cam)


def load_network(model_dir: Path, meta: dict[str, Any]) -> nn.Module:
    """Rebuild the backbone from the metadata and load the exported fp32 ``state_dict``."""
    net = build_backbone(
        meta["backbone"], num_classes=int(meta["num_classes"]), in_channels=meta["in_channels"]
    )
    state = torch.load(Path(model_dir) / artefacts.WEIGHTS, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.eval()


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
        if threads:
            torch.set_num_threads(threads)
        self.backend: Backend = load_backend(
            self.model_dir, self.meta, precision=precision, threads=threads
        ) or TorchBackend(load_network(self.model_dir, self.meta), str(self.meta["backbone"]))
        self.ood = OODGuard.load(self.model_dir)  # None for exports without OOD statistics
        available = getattr(self.backend, "source_names", None)
        if self.ood is not None and available is not None:
            missing = [p.source for p in self.ood.parts if p.source not in available]
            if missing:
                raise ValueError(
                    f"{artefacts.OOD_STATS} reads feature source(s) {', '.join(missing)} that the "
                    f"{self.backend.name} backend does not output (mixed export versions?): "
                    "re-export the model (make mar)"
                )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(channels, size, size)`` of one decoded image."""
        size = self.preprocessing.image_size
        return (int(self.meta["in_channels"]), size, size)

    def decode(self, data: bytes) -> torch.Tensor:
        """Image bytes -> ``uint8 [1, S, S]`` through THE preprocessing (raises ``ImageDecodeError``)."""
        prep = self.preprocessing
        return load(data, image_size=prep.image_size, head_crop=prep.head_crop)

    def forward(self, pixels: torch.Tensor, *, cam: bool = False) -> Forward:
        """``uint8 [N, 1, S, S]`` -> logits and features (and the CAM layer's output if ``cam``)."""
        return self.backend(self.normalise(pixels), cam=cam)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities ``float64 [N, C]``: ``softmax(logits / T)``."""
        return (logits.double() / self.temperature).softmax(dim=1)

    def answer(self, probs: torch.Tensor) -> dict[str, Any]:
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

    def predict(self, pixels: torch.Tensor) -> list[dict[str, Any]]:
        """``uint8 [N, 1, S, S]`` -> one answer per image."""
        return self.answers(self.forward(pixels))

    def warm_up(self) -> None:
        """Run one blank image through the model so the first request is not slow."""
        self.forward(torch.zeros(1, *self.input_shape, dtype=torch.uint8))
