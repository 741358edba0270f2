"""How composite backbones are named, in pure Python.

* an ensemble: ``<member>x<N>`` (``resnet18x3``: three ResNet-18s; the network is
  :class:`lightning_app.models.ensemble.Ensemble`), or its members in order joined by ``+``
  (``resnet18_w48+resnet18x2``: a narrowed ResNet-18 first, then two ResNet-18s);
* a narrowed ResNet: ``<resnet>_w<W>`` (``resnet18_w32``: ResNet-18 with ``W`` channels in
  its first stage instead of 64, doubling per stage as usual; about ``(W/64)**2`` of the FLOPs);
* a mirror-stem ResNet: ``<resnet>_mirror`` (its first conv also sees ``|x - flip(x)|``,
  :class:`lightning_app.models.backbones.MirrorStem`; otherwise its base network).

Pure Python, so the torch-free inference core can read a name from ``model_meta.json`` and
find the network's layers (:mod:`lightning_app.inference.taps`) without importing torch.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

_PART = re.compile(r"^(?P<member>[a-z][a-z0-9_]*?)(?:x(?P<count>[1-9][0-9]*))?$")
_NARROW = re.compile(r"^(?P<base>resnet18|resnet34)_w(?P<width>[1-9][0-9]*)$")
_MIRROR = re.compile(r"^(?P<base>resnet18|resnet34)_mirror$")


def ensemble_name(members: Sequence[str]) -> str:
    """The backbone name of an ensemble of ``members`` in order, runs of one name counted.

    ``["resnet18"] * 3`` -> ``resnet18x3``; ``["resnet18_w48", "resnet18", "resnet18"]`` ->
    ``resnet18_w48+resnet18x2``. :func:`members` reads it back.
    """
    parts = []
    for name, run in itertools.groupby(members):
        count = len(list(run))
        parts.append(name if count == 1 else f"{name}x{count}")
    return "+".join(parts)


def members(backbone: str) -> tuple[str, ...] | None:
    """The members' backbone names of an ensemble (at least two), in order; ``None`` for one network."""
    names: list[str] = []
    for part in backbone.split("+"):
        match = _PART.match(part)
        if match is None:
            return None
        names += [match["member"]] * int(match["count"] or 1)
    return tuple(names) if len(names) >= 2 else None


def narrow(backbone: str) -> tuple[str, int] | None:
    """``(base, width)`` of a narrowed ResNet (``resnet18_w32``: ``("resnet18", 32)``), else ``None``."""
    match = _NARROW.match(backbone)
    return None if match is None else (match["base"], int(match["width"]))


def mirrored(backbone: str) -> str | None:
    """The base of a mirror-stem ResNet (``resnet18_mirror``: ``"resnet18"``), else ``None``."""
    match = _MIRROR.match(backbone)
    return None if match is None else match["base"]


def family(backbone: str) -> str:
    """The architecture whose layer names a backbone has: its first member's; a ResNet's base."""
    member = (members(backbone) or (backbone,))[0]
    narrowed = narrow(member)
    return narrowed[0] if narrowed is not None else mirrored(member) or member
