"""How an ensemble backbone is named: ``<member>x<N>`` (``resnet18x3``: three ResNet-18s).

Pure Python, so the torch-free inference core can read a name from ``model_meta.json`` and
find the member's layers (:mod:`lightning_app.inference.taps`) without importing torch; the
network itself is :class:`lightning_app.models.ensemble.Ensemble`.
"""

from __future__ import annotations

import re

_NAME = re.compile(r"^(?P<member>[a-z][a-z0-9_]*?)x(?P<count>[1-9][0-9]*)$")


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
