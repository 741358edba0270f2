"""Several ResNets of one family as ONE network: the mean of their calibrated probabilities.

The seed ensemble that ``make cv`` measured (docs/cv_study.md) averages its members'
temperature-scaled probabilities. Built as one ``nn.Module`` it exports as one ONNX graph,
goes through the same int8 parity gate and serves through the same core:

* the members run stage by stage; after each stage their activations are concatenated and
  pass an ``nn.Identity`` named like the member's stage (``layer1`` ... ``layer4``), so the
  class-activation tap finds the layer it knows, and gradients (LayerCAM) flow through it;
* ``fc`` is ONE linear layer over the concatenated pooled features, block-diagonal: rows
  ``i*C .. i*C+C-1`` are member ``i``'s classifier divided by its temperature, so the
  final-layer weight folded over the members (:func:`lightning_app.inference.explain.class_weights`)
  gives the mean of their class-activation maps;
* the output is ``log(mean_i softmax(z_i))``: its softmax IS the mean of the members'
  calibrated probabilities, so the ensemble's own temperature is 1.

Only torchvision ResNets (the ``_os16`` and narrowed ones too) are assembled: their stages are
top-level modules. Members may differ in width (``resnet18_w48+resnet18x2``: a cheaper first
member for a serving cascade), not in stride: their stages are concatenated cell by cell.
``build_backbone("resnet18x3")`` builds an empty one for a ``state_dict``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lightning_app.errors import ConfigError

#: The member stages an ensemble taps (torchvision ResNets).
STAGES = ("layer1", "layer2", "layer3", "layer4")


def resnet_head(net: nn.Module) -> nn.Linear:
    """The classifier of a torchvision ResNet; ``ConfigError`` for any other network."""
    names = ("conv1", "bn1", "relu", "maxpool", *STAGES, "avgpool", "fc")
    head = getattr(net, "fc", None)
    if not all(hasattr(net, n) for n in names) or not isinstance(head, nn.Linear):
        raise ConfigError(f"an ensemble is built of torchvision ResNets; {type(net).__name__} is not one")
    return head


def stage_channels(net: nn.Module) -> tuple[int, ...]:
    """The channels each of a ResNet's :data:`STAGES` puts out: its last block's last batch norm."""
    blocks = [list(getattr(net, stage).children())[-1] for stage in STAGES]
    return tuple(int((getattr(b, "bn3", None) or b.bn2).num_features) for b in blocks)


class Ensemble(nn.Module):
    """ResNets of one family whose calibrated probabilities are averaged (see the module docstring)."""

    def __init__(self, members: Sequence[nn.Module], num_classes: int) -> None:
        super().__init__()
        if len(members) < 2:
            raise ConfigError("an ensemble needs at least two members")
        for net in members:
            resnet_head(net)  # every member checked: a torchvision ResNet
        #: each member's channels per stage, in :data:`STAGES` order (how the taps are split)
        self.channels = [stage_channels(net) for net in members]
        for net in members:
            net.fc = nn.Identity()  # the ensemble's fc holds every member's classifier
        self.members = nn.ModuleList(members)
        self.num_classes = num_classes
        for stage in STAGES:  # the taps: named as the member's stages
            setattr(self, stage, nn.Identity())
        # registered last: the network's final nn.Linear (final_linear) and last 2-D weight
        self.fc = nn.Linear(sum(self.widths), len(members) * num_classes)

    @property
    def widths(self) -> list[int]:
        """Each member's penultimate features: its last stage's channels, pooled."""
        return [channels[-1] for channels in self.channels]

    def _columns(self, i: int) -> slice:
        """Member ``i``'s columns of ``fc``: its penultimate features among the concatenated ones."""
        start = sum(self.widths[:i])
        return slice(start, start + self.widths[i])

    @classmethod
    @torch.no_grad()
    def assemble(cls, nets: Sequence[nn.Module], temperatures: Sequence[float]) -> Ensemble:
        """The ensemble of trained ``nets``, each classifier divided by its fitted temperature."""
        heads = [resnet_head(net) for net in nets]
        num_classes = heads[0].out_features
        ensemble = cls(list(nets), num_classes)
        ensemble.fc.weight.zero_()
        for i, (head, t) in enumerate(zip(heads, temperatures, strict=True)):
            rows = slice(i * num_classes, (i + 1) * num_classes)
            ensemble.fc.weight[rows, ensemble._columns(i)] = head.weight / float(t)
            ensemble.fc.bias[rows] = head.bias / float(t)
        return ensemble

    @torch.no_grad()
    def part(self, start: int, stop: int | None = None) -> Ensemble:
        """Members ``start:stop`` alone, as an ensemble of their own: a stage of a serving cascade.

        Its output is ``log`` of those members' mean calibrated probabilities, and its modules
        keep the ensemble's names (``members.0.layer1`` ..., the ``layer*`` taps, ``fc``), so its
        graph has the ensemble's outputs (:mod:`lightning_app.inference.cascade`). Its ``cam``
        and features are those members' channels of the ensemble's, in the same order.
        """
        picked = range(len(self.members))[start:stop]
        if not picked:
            raise ConfigError(f"members {start}:{stop} of an ensemble of {len(self.members)} are none")
        one = copy.deepcopy(self)
        one.members = nn.ModuleList([one.members[i] for i in picked])
        one.channels = [self.channels[i] for i in picked]
        classes = self.num_classes
        rows = torch.cat([torch.arange(i * classes, (i + 1) * classes) for i in picked])
        cols = torch.cat([torch.arange(self.fc.in_features)[self._columns(i)] for i in picked])
        head = nn.Linear(len(cols), len(picked) * classes)  # the picked blocks of fc
        head.weight.copy_(self.fc.weight[rows][:, cols])
        head.bias.copy_(self.fc.bias[rows])
        one.fc = head
        return one.train(self.training)

    def leader(self) -> Ensemble:
        """The first member alone (:meth:`part`): the first stage of a serving cascade."""
        return self.part(0, 1)

    def followers(self) -> Ensemble:
        """Every member but the first (:meth:`part`): what a cascade adds for the scans it doubts."""
        return self.part(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``log`` of the members' mean calibrated probabilities ``[N, num_classes]``."""
        members: list[Any] = list(self.members)  # torchvision ResNets (resnet_head checked them)
        hs = [m.maxpool(m.relu(m.bn1(m.conv1(x)))) for m in members]
        for s, stage in enumerate(STAGES):
            out = [getattr(m, stage)(h) for m, h in zip(members, hs, strict=True)]
            sizes = [channels[s] for channels in self.channels]
            hs = list(getattr(self, stage)(torch.cat(out, dim=1)).split(sizes, dim=1))
        features = torch.cat([torch.flatten(m.avgpool(h), 1) for m, h in zip(members, hs, strict=True)], 1)
        z = self.fc(features).unflatten(1, (len(members), self.num_classes))
        return torch.logsumexp(z.log_softmax(dim=-1), dim=1) - math.log(len(members))
