"""How composite backbones are named, in pure Python.

* an ensemble: ``<member>x<N>`` (``resnet18x3``: three ResNet-18s; the network is
  :class:`lightning_app.models.ensemble.Ensemble`);
* a narrowed ResNet: ``<resnet>_w<W>`` (``resnet18_w32``: ResNet-18 with ``W`` channels in
  its first stage instead of 64, doubling per stage as usual; about ``(W/64)**2`` of the FLOPs).

Pure Python, so the torch-free inference core can read a name from ``model_meta.json`` and
find the network's layers (:mod:`lightning_app.inference.taps`) without importing torch.
"""

from __future__ import annotations

import re

_NAME = re.compile(r"^(?P<member>[a-z][a-z0-9_]*?)x(?P<count>[1-9][0-9]*)$")
_NARROW = re.compile(r"^(?P<base>resnet18|resnet34)_w(?P<width>[1-9][0-9]*)$")


def ensemble_name(member: str, count: int) -> str:
    """The backbone name of ``count`` copies of ``member`` (``resnet18``, 3 -> ``resnet18x3``)."""
    return f"{member}x{count}"


def parse(backbone: str) -> tuple[str, int] | None:
    """``(member, count)`` of an ensemble name with at least two members, else ``None``."""
    match = _NAME.match(backbone)
    if match is None or int(match["count"]) < 2:
        return None
    return match["member"], int(match["count"])


def member_of(backbone: str) -> str:
    """The member's backbone name for an ensemble, the name itself for a single network."""
    parsed = parse(backbone)
    return backbone if parsed is None else parsed[0]


def narrow(backbone: str) -> tuple[str, int] | None:
    """``(base, width)`` of a narrowed ResNet (``resnet18_w32``: ``("resnet18", 32)``), else ``None``."""
    match = _NARROW.match(backbone)
    return None if match is None else (match["base"], int(match["width"]))


def family(backbone: str) -> str:
    """The architecture whose layer names a backbone has: an ensemble's member, a narrowed ResNet's base."""
    member = member_of(backbone)
    narrowed = narrow(member)
    return member if narrowed is None else narrowed[0]
