"""Plain ``nn.Module`` backbones, built by name; no Lightning here.

The TorchServe handler imports this module to rebuild the network from a
``state_dict``, so it must stay free of Lightning and of our data code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lightning_app.errors import ConfigError
from lightning_app.models.ensemble_names import members, mirrored, narrow

#: torchvision architectures offered by name (any other torchvision classifier also works).
TORCHVISION = (
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
)


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """A compact VGG-style CNN for CPUs: one strided and one plain 3x3 conv per stage."""

    def __init__(
        self, *, num_classes: int, in_channels: int = 1, widths: tuple[int, ...] = (32, 64, 128, 256)
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i, width in enumerate(widths):
            layers += [_conv_bn(cin, width, 1 if i == 0 else 2), _conv_bn(width, width, 1)]
            cin = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(cin, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``[N, num_classes]``."""
        return self.head(self.features(x))


def adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Change the first conv to ``in_channels`` inputs, keeping what it learnt.

    For grayscale input the RGB filters are summed: a gray image ``g`` fed to the
    original stem as ``(g, g, g)`` gives exactly the same activations, so pretrained
    weights stay meaningful. Other channel counts repeat the mean filter.
    """
    for name, module in model.named_modules():  # noqa: B007 - used after the loop
        if isinstance(module, nn.Conv2d):
            break
    else:
        raise ValueError("model has no Conv2d layer to adapt")
    if module.in_channels == in_channels:
        return
    new = nn.Conv2d(
        in_channels,
        module.out_channels,
        module.kernel_size,  # type: ignore[arg-type]
        stride=module.stride,  # type: ignore[arg-type]
        padding=module.padding,  # type: ignore[arg-type]
        dilation=module.dilation,  # type: ignore[arg-type]
        groups=module.groups,
        bias=module.bias is not None,
    )
    with torch.no_grad():
        summed = module.weight.sum(dim=1, keepdim=True)
        if in_channels == 1:
            new.weight.copy_(summed)
        else:
            new.weight.copy_((summed / in_channels).repeat(1, in_channels, 1, 1))
        if module.bias is not None and new.bias is not None:
            new.bias.copy_(module.bias)
    parent = model
    *path, last = name.split(".")
    for part in path:
        parent = getattr(parent, part)
    setattr(parent, last, new)


def final_linear(model: nn.Module) -> nn.Linear:
    """The classification layer: the last ``nn.Linear`` of the network (its input = the features)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no Linear layer")
    return linears[-1]


def _replace_head(model: nn.Module, num_classes: int) -> None:
    """Swap the final Linear layer for one with ``num_classes`` outputs."""
    for attr in ("fc", "classifier", "head", "heads"):
        head = getattr(model, attr, None)
        if isinstance(head, nn.Linear):
            setattr(model, attr, nn.Linear(head.in_features, num_classes))
            return
        if isinstance(head, nn.Sequential) and isinstance(head[-1], nn.Linear):
            head[-1] = nn.Linear(head[-1].in_features, num_classes)
            return
    raise ValueError(f"cannot find the classification head of {type(model).__name__}")


def _torchvision(name: str, *, num_classes: int, in_channels: int, weights: str | None) -> nn.Module:
    import torchvision

    if weights is None:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    else:
        model = torchvision.models.get_model(name, weights=weights)
        _replace_head(model, num_classes)
    adapt_first_conv(model, in_channels)
    return model


#: ResNets whose last stage keeps its input's resolution ("output stride 16"): the class-
#: activation map gets twice the cells per side (8x8 at 128 px instead of 4x4), so heatmaps
#: can localise, at about 1.6x the FLOPs of the plain network. Same weights' shapes.
OUTPUT_STRIDE_16 = {"resnet18_os16": "resnet18", "resnet34_os16": "resnet34"}


def output_stride_16(model: nn.Module) -> nn.Module:
    """Remove the stride of a torchvision ResNet's ``layer4`` (first block and its shortcut)."""
    block: Any = model.layer4[0]  # type: ignore[index]
    block.conv1.stride = (1, 1)
    if block.downsample is not None:
        block.downsample[0].stride = (1, 1)
    return model


class MirrorStem(nn.Module):
    """A first conv that sees the image and ``|x - flip(x)|``, its difference from its mirror.

    A healthy brain is roughly left-right symmetric and most tumours are not, so the second
    channel spells out an asymmetry the network could otherwise only learn from the data. It is
    computed inside the network, so serving, export and the preprocessing are unchanged; a
    mirrored image gets the mirrored channel, so flip augmentation stays consistent.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 1, H, W]`` -> the wrapped conv of ``[x, |x - flip(x)|]``."""
        return self.conv(torch.cat([x, (x - x.flip(-1)).abs()], dim=1))


def mirror_stem(model: nn.Module) -> nn.Module:
    """Give a one-channel torchvision ResNet a :class:`MirrorStem` (its ``conv1`` takes 2 channels)."""
    old: Any = model.conv1
    conv = nn.Conv2d(2, old.out_channels, old.kernel_size, stride=old.stride, padding=old.padding, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    model.conv1 = MirrorStem(conv)
    return model


def narrow_resnet(base: str, width: int, *, num_classes: int, in_channels: int) -> nn.Module:
    """A torchvision ResNet (``resnet18``/``resnet34``) with ``width`` channels in its first stage.

    The stages keep their block counts and double the width per stage (``width`` .. ``8*width``),
    and the module keeps torchvision's names (``conv1`` ... ``layer4``, ``fc``), so the CAM, the
    OOD taps and the ensemble treat it as the base network. Initialised as torchvision does.
    """
    from torchvision.models.resnet import BasicBlock

    model: Any = _torchvision(base, num_classes=num_classes, in_channels=in_channels, weights=None)
    model.inplanes = width
    model.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(width)
    for i in range(4):
        name = f"layer{i + 1}"
        blocks = len(getattr(model, name))
        setattr(model, name, model._make_layer(BasicBlock, width * 2**i, blocks, stride=1 if i == 0 else 2))
    model.fc = nn.Linear(8 * width, num_classes)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return model


def build_backbone(
    name: str, *, num_classes: int, in_channels: int = 1, weights: str | None = None
) -> nn.Module:
    """Build a backbone by name: ``small_cnn``, a torchvision classifier, a ``*_os16`` ResNet...

    ... a narrowed ResNet (``resnet18_w32``, :func:`narrow_resnet`) or an empty ensemble
    of ResNets (``resnet18x3``, :mod:`lightning_app.models.ensemble`).

    ``weights`` is a torchvision weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``) or
    ``None`` for random initialisation; it needs the internet on first use.
    """
    names = members(name)
    if names is not None:  # ``resnet18x3``: an empty Ensemble, to load an assembled state_dict
        from lightning_app.models.ensemble import Ensemble

        if weights is not None:
            raise ConfigError(f"backbone {name!r} is an assembled ensemble: it has no pretrained weights")
        nets = [build_backbone(n, num_classes=num_classes, in_channels=in_channels) for n in names]
        return Ensemble(nets, num_classes)
    builders: dict[str, Callable[[], nn.Module]] = {
        "small_cnn": lambda: SmallCNN(num_classes=num_classes, in_channels=in_channels),
    }
    if name in builders:
        if weights is not None:
            raise ConfigError(f"backbone {name!r} has no pretrained weights")
        return builders[name]()
    narrowed = narrow(name)
    if narrowed is not None:
        if weights is not None:
            raise ConfigError(f"backbone {name!r} is a narrowed ResNet: it has no pretrained weights")
        return narrow_resnet(*narrowed, num_classes=num_classes, in_channels=in_channels)
    if name in OUTPUT_STRIDE_16:
        base = OUTPUT_STRIDE_16[name]
        return output_stride_16(
            _torchvision(base, num_classes=num_classes, in_channels=in_channels, weights=weights)
        )
    mirror_base = mirrored(name)
    if mirror_base is not None:
        if weights is not None or in_channels != 1:
            raise ConfigError(f"backbone {name!r} takes one grey channel and has no pretrained weights")
        return mirror_stem(_torchvision(mirror_base, num_classes=num_classes, in_channels=1, weights=None))
    import torchvision

    if name not in torchvision.models.list_models(module=torchvision.models):
        known = ", ".join(
            ["small_cnn", *TORCHVISION, *OUTPUT_STRIDE_16, "resnet18_mirror", "resnet18_w32 (any width)"]
        )
        raise ConfigError(f"unknown backbone {name!r}; choose one of {known}")
    return _torchvision(name, num_classes=num_classes, in_channels=in_channels, weights=weights)
