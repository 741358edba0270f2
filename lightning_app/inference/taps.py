"""Which inner layers a forward pass exposes, per backbone, and the module that exposes them.

The one place that names them:

* :data:`CAM_LAYERS` — the class-activation layer (the last conv block before global pooling)
  and the heatmap method of each backbone (used by :mod:`lightning_app.inference.explain`);
* :data:`STAGE_LAYERS` — the stages whose globally pooled statistics (per-channel mean and
  standard deviation) feed the out-of-distribution guard's feature ensemble
  (:mod:`lightning_app.inference.ood`, Lee et al. 2018).

:class:`Tapped` wraps a backbone so that ONE forward pass returns the logits, the
penultimate features, the class-activation map's input and the pooled stage statistics.
The eager backend runs it directly; the ONNX export traces it, so the fp32 and int8 graphs
have the same outputs (:data:`OUTPUT_NAMES` order; ``cam`` and ``stage_*`` only where the
backbone has such layers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from lightning_app.models.backbones import final_linear

Method = Literal["cam", "grad-cam"]

LOGITS, FEATURES, CAM = "logits", "features", "cam"
#: Prefix of the pooled stage outputs: ``stage_layer1``, ...
STAGE_PREFIX = "stage_"


@dataclass(frozen=True)
class CamSpec:
    """Which module's output is the class-activation layer, and how to weight it."""

    layer: str  # dotted name in ``net.named_modules()``
    method: Method


#: The class-activation layer of each backbone: the last conv block before global pooling.
CAM_LAYERS: dict[str, CamSpec] = {
    "small_cnn": CamSpec("features", "cam"),
    "resnet18": CamSpec("layer4", "cam"),
    "resnet18_os16": CamSpec("layer4", "cam"),
    "resnet34_os16": CamSpec("layer4", "cam"),
    "resnet34": CamSpec("layer4", "cam"),
    "resnet50": CamSpec("layer4", "cam"),
    "efficientnet_b0": CamSpec("features", "cam"),
    "mobilenet_v3_small": CamSpec("features", "grad-cam"),
    "mobilenet_v3_large": CamSpec("features", "grad-cam"),
}

_RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")
#: Stages pooled for the OOD feature ensemble. Backbones without an entry use the
#: penultimate features only.
STAGE_LAYERS: dict[str, tuple[str, ...]] = {
    "small_cnn": ("features.1", "features.3", "features.5", "features.7"),  # the end of each stage
    "resnet18": _RESNET_STAGES,
    "resnet18_os16": _RESNET_STAGES,
    "resnet34_os16": _RESNET_STAGES,
    "resnet34": _RESNET_STAGES,
    "resnet50": _RESNET_STAGES,
}


def cam_spec(backbone: str) -> CamSpec:
    """The :class:`CamSpec` of a backbone (``ValueError`` for one without an entry)."""
    try:
        return CAM_LAYERS[backbone]
    except KeyError:
        raise ValueError(f"no class-activation layer known for backbone {backbone!r}") from None


def stage_name(layer: str) -> str:
    """The output name of a stage's pooled statistics (``layer1`` -> ``stage_layer1``)."""
    return STAGE_PREFIX + layer


def pooled(activations: torch.Tensor) -> torch.Tensor:
    """Per-channel spatial mean and standard deviation, ``[N, C, h, w] -> [N, 2C]``."""
    a = activations.float()
    mean = a.mean(dim=(2, 3))
    var = (a * a).mean(dim=(2, 3)) - mean * mean
    return torch.cat([mean, var.clamp_min(0).sqrt()], dim=1)


class Tapped(nn.Module):
    """``net`` returning ``(logits, features[, cam][, stage_*...])`` from one forward pass.

    ``features`` is the input of the final linear layer, ``cam`` the output of the
    class-activation layer (``cam_layer``), each ``stage_<layer>`` the :func:`pooled`
    statistics of a stage. :attr:`output_names` lists the outputs in order.
    """

    def __init__(self, net: nn.Module, *, cam_layer: str | None = None, stages: Sequence[str] = ()) -> None:
        super().__init__()
        self.net = net
        modules = dict(net.named_modules())
        missing = [name for name in (cam_layer, *stages) if name is not None and name not in modules]
        if missing:
            raise ValueError(f"{type(net).__name__} has no module(s) {', '.join(missing)}")
        self.cam_layer = cam_layer
        self.stages = tuple(stages)
        self.output_names = [LOGITS, FEATURES]
        self.output_names += [CAM] if cam_layer is not None else []
        self.output_names += [stage_name(s) for s in self.stages]
        self._head = final_linear(net)
        self._taps = {name: modules[name] for name in {*self.stages, *([cam_layer] if cam_layer else [])}}

    @classmethod
    def for_backbone(cls, net: nn.Module, backbone: str, *, ood_stages: bool = True) -> Tapped:
        """Taps named by :data:`CAM_LAYERS` (CAM heads only) and :data:`STAGE_LAYERS`."""
        spec = CAM_LAYERS.get(backbone)
        cam_layer = spec.layer if spec is not None and spec.method == "cam" else None
        return cls(net, cam_layer=cam_layer, stages=STAGE_LAYERS.get(backbone, ()) if ood_stages else ())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One pass: the outputs named by :attr:`output_names`, in that order."""
        kept: dict[str, torch.Tensor] = {}

        def keeper(name: str) -> Any:
            return lambda _m, _i, output: kept.__setitem__("layer:" + name, output)

        # hooks live for this call only: a network may be wrapped more than once
        handles = [
            self._head.register_forward_pre_hook(lambda _m, inputs: kept.__setitem__(FEATURES, inputs[0]))
        ]
        handles += [module.register_forward_hook(keeper(name)) for name, module in self._taps.items()]
        try:
            logits = self.net(x)
        finally:
            for handle in handles:
                handle.remove()
        out = [logits, kept[FEATURES]]
        if self.cam_layer is not None:
            out.append(kept["layer:" + self.cam_layer])
        out += [pooled(kept["layer:" + s]) for s in self.stages]
        return tuple(out)
