"""Which inner layers a forward pass exposes, per backbone, and the module that exposes them.

The one place that names them:

* :data:`CAM_LAYERS` — the class-activation layer (the last conv block before global pooling)
  and the heatmap method of each backbone (used by :mod:`lightning_app.inference.explain`);
* :data:`STAGE_LAYERS` — the stages whose globally pooled statistics (per-channel mean and
  standard deviation) feed the out-of-distribution guard's feature ensemble
  (:mod:`lightning_app.inference.ood`, Lee et al. 2018).

:class:`~lightning_app.inference.tapped.Tapped` wraps a backbone so that ONE forward pass
returns them all; this module only names them, and needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lightning_app.models.ensemble_names import family, members

Method = Literal["cam", "grad-cam"]
#: Heatmap methods finer than each backbone's own CAM/Grad-CAM (a backward pass through fp32
#: torch; :mod:`lightning_app.inference.gradcam`): LayerCAM (Jiang et al. 2021) on
#: :func:`fine_layer`, and gradient x input (Shrikumar et al. 2016) on the pixels.
FineMethod = Literal["layer-cam", "gradient-input"]
FINE_METHODS: tuple[FineMethod, ...] = ("layer-cam", "gradient-input")
#: Occlusion (Zeiler & Fergus 2014; :mod:`lightning_app.inference.occlusion`): forward passes
#: of the served backend only, so torch-free.
OCCLUSION = "occlusion"
#: Every heatmap method a server can be asked for (``SERVE_HEATMAP``); ``cam`` is the
#: backbone's own (:data:`CAM_LAYERS`: CAM, or Grad-CAM on MobileNet heads).
HEATMAP_METHODS: tuple[str, ...] = ("cam", *FINE_METHODS, OCCLUSION)
#: What ``SERVE_HEATMAP=auto`` (the default) explains with where the served backend is eager
#: fp32 torch (the network is at hand). ``make bench-localise`` (docs/benchmarks.md): LayerCAM
#: puts 0.71 of its mass on the head against the CAM's 0.53 on the default model, short of
#: the 0.85 goal; occlusion clears it (0.91-0.93 out of fold) at 65 forward passes an
#: explanation, so it is asked for by name and the CAM stays the default.
EAGER_DEFAULT: str = "cam"

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

#: LayerCAM's layer: the last one whose grid is twice the CAM's (8x8 cells at 128 px on a
#: ResNet; 16x16 on the ``_os16`` ones, whose ``layer3`` has their CAM's 8x8). Backbones
#: without an entry use their CAM layer.
FINE_LAYERS: dict[str, str] = {
    "small_cnn": "features.5",
    "resnet18": "layer3",
    "resnet18_os16": "layer2",
    "resnet34_os16": "layer2",
    "resnet34": "layer3",
    "resnet50": "layer3",
}
#: The layer name answers give for gradient x input: the network's input pixels.
INPUT_LAYER = "input"

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
        return CAM_LAYERS[family(backbone)]  # an ensemble's: its member's; resnet18_w32: resnet18's
    except KeyError:
        raise ValueError(f"no class-activation layer known for backbone {backbone!r}") from None


def fine_layer(backbone: str, method: str) -> str:
    """The layer a :data:`FINE_METHODS` heatmap is taken at for ``backbone``."""
    if method == "gradient-input":
        return INPUT_LAYER
    return FINE_LAYERS.get(family(backbone)) or cam_spec(backbone).layer


def stage_layers(backbone: str) -> tuple[str, ...]:
    """The stages pooled for the OOD guard (:data:`STAGE_LAYERS`).

    An ensemble's are its first member's, the guard a single network of the recipe has: the
    members' concatenated stages would make a covariance ``N`` times wider (75 MB of precision
    matrix at ``layer4`` for three ResNet-18s) for features that mostly repeat each other.
    """
    stages = STAGE_LAYERS.get(family(backbone), ())
    return stages if members(backbone) is None else tuple(f"members.0.{stage}" for stage in stages)


def stage_name(layer: str) -> str:
    """The output name of a stage's pooled statistics (``layer1`` -> ``stage_layer1``)."""
    return STAGE_PREFIX + layer
