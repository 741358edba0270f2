"""The eager PyTorch backend: the exported ``state_dict`` rebuilt as its backbone.

The one part of serving that needs torch (and torchvision for its backbones): a model
exported without an ONNX graph (``precision: fp32``), and the fp32 network that Grad-CAM
(MobileNet heads) and CAM of format-2 artefacts back-propagate through
(:mod:`lightning_app.inference.gradcam`). The engine imports this module only when it needs
it, so a server of ONNX artefacts never loads torch; without torch installed,
:func:`require_torch` says so in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lightning_app.inference import artefacts
from lightning_app.inference.forward import Forward, forward_from
from lightning_app.inference.tapped import Tapped
from lightning_app.inference.taps import CAM
from lightning_app.models.backbones import build_backbone


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
    def __call__(self, x: Any, *, cam: bool = False) -> Forward:
        """Run one batch (numpy or a tensor); every output a ``float32`` numpy array."""
        x = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
        outputs = self.tapped(x.float().contiguous(memory_format=torch.channels_last))
        return forward_from(self.tapped.output_names, [o.numpy() for o in outputs], cam=cam)


def load_network(model_dir: Path, meta: dict[str, Any]) -> nn.Module:
    """Rebuild the backbone from the metadata and load the exported fp32 ``state_dict``."""
    net = build_backbone(
        meta["backbone"], num_classes=int(meta["num_classes"]), in_channels=meta["in_channels"]
    )
    state = torch.load(Path(model_dir) / artefacts.WEIGHTS, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.eval()
