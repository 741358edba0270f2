"""What a forward pass returns, what runs one, and how named graph outputs become one.

:class:`Forward` and the :class:`Backend` protocol sit below both the engine
(:mod:`~lightning_app.inference.engine`) and the backends
(:mod:`~lightning_app.inference.backends`), so neither imports the other's module to name them.
Every output is a numpy array, whatever ran the pass (ONNX Runtime, or eager PyTorch through
:mod:`~lightning_app.inference.eager`): the serving core needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from lightning_app.inference.taps import CAM


@dataclass(frozen=True)
class Forward:
    """What one forward pass returns for a batch of ``N`` images."""

    logits: np.ndarray  # float32 [N, C]
    features: np.ndarray  # float32 [N, D], the final linear layer's input
    #: float32 [N, K, h, w]: the class-activation layer's output (only when asked, and
    #: only from backends that expose it; ``None`` otherwise).
    cam: np.ndarray | None = None
    #: ``stage_<layer>`` -> float32 [N, 2C_s], pooled stage statistics (OOD feature ensemble).
    stages: dict[str, np.ndarray] = field(default_factory=dict)

    def sources(self) -> dict[str, np.ndarray]:
        """The named feature sources an OOD guard may read: ``features`` and every stage."""
        return {"features": self.features, **self.stages}


class Backend(Protocol):
    """A runnable model: normalised ``float32 [N, 1, S, S]`` -> :class:`Forward`."""

    name: str
    #: Whether ``__call__(x, cam=True)`` returns :attr:`Forward.cam`.
    has_cam: bool

    def __call__(self, x: Any, *, cam: bool = False) -> Forward:
        """Run one batch (numpy, or a CPU tensor at export); ``cam=True``: also the CAM layer's output."""
        ...


def forward_from(names: list[str], outputs: list[Any], *, cam: bool) -> Forward:
    """A :class:`Forward` from named outputs (``logits``, ``features``, ``cam``, ``stage_*``)."""
    named = {name: np.asarray(value, dtype=np.float32) for name, value in zip(names, outputs, strict=True)}
    return Forward(
        logits=named["logits"],
        features=named["features"],
        cam=named.get(CAM) if cam else None,
        stages={k: v for k, v in named.items() if k.startswith("stage_")},
    )


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / temperature)`` over the last axis, in ``float64``."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    shifted = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    out: np.ndarray = shifted / shifted.sum(axis=-1, keepdims=True)
    return out
