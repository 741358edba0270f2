"""The module that exposes a backbone's inner layers: one pass, every output the core reads.

:class:`Tapped` wraps a backbone so that ONE forward pass returns the logits, the
penultimate features, the class-activation map's input and the pooled stage statistics
(the layers are named in :mod:`lightning_app.inference.taps`). The eager backend runs it
directly; the ONNX export traces it, so the fp32 and int8 graphs have the same outputs
(``cam`` and ``stage_*`` only where the backbone has such layers). Needs torch: only the
export and the eager backend import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lightning_app.inference.taps import CAM, FEATURES, LOGITS, cam_spec, stage_layers, stage_name
from lightning_app.models.backbones import final_linear


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
        """Taps named by the backbone's ``cam_spec`` (CAM heads only) and ``stage_layers``.

        Both in :mod:`lightning_app.inference.taps`; an ensemble's are its member's.
        """
        try:
            spec = cam_spec(backbone)
            cam_layer = spec.layer if spec.method == "cam" else None
        except ValueError:  # a backbone without a known class-activation layer
            cam_layer = None
        return cls(net, cam_layer=cam_layer, stages=stage_layers(backbone) if ood_stages else ())

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
