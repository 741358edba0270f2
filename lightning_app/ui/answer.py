"""The model's answer as the page reads it: dataclasses, and lenient parsers of the JSON.

Every parser returns ``None`` for a missing or malformed part instead of raising, so a
server that answers with less (an older export, another handler) still shows what it sent.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class InDistribution:
    """The server's out-of-distribution verdict: ``ok`` when the score is within the threshold."""

    ok: bool
    score: float
    threshold: float


@dataclass(frozen=True)
class Decision:
    """The screening operating point's answer: label, score ``1 - P(negative)`` and threshold."""

    label: str
    score: float
    threshold: float
    target: str


@dataclass(frozen=True)
class Heatmap:
    """An explanation: an 8-bit grayscale PNG on the model's input grid, for one class."""

    png: bytes
    target: str
    method: str


@dataclass(frozen=True)
class Prediction:
    """One answer of the model: every class with its probability, highest first."""

    label: str
    probabilities: dict[str, float]
    model_name: str
    model_version: str | None
    latency_ms: float
    in_distribution: InDistribution | None = None
    decision: Decision | None = None
    warning: str | None = None
    heatmap: Heatmap | None = None


@dataclass(frozen=True)
class Health:
    """TorchServe's ``/ping`` answer."""

    healthy: bool
    status: str


@dataclass(frozen=True)
class ModelInfo:
    """What the management API says about the served model."""

    name: str
    version: str | None
    workers_ready: int
    workers_total: int
    raw: dict[str, Any] = field(default_factory=dict)


def number(value: Any) -> float | None:
    """A finite JSON number as a float (``None`` for booleans, strings, NaN and infinities)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def probabilities(body: Any) -> dict[str, float] | None:
    """Class -> probability from the shapes TorchServe handlers answer with."""
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    if not isinstance(body, dict):
        return None
    for key in ("probabilities", "classes", "scores"):
        if key in body:
            return probabilities(body[key]) if not isinstance(body[key], list) else pairs(body[key])
    floats = {str(k): number(v) for k, v in body.items()}
    if floats and all(v is not None for v in floats.values()):
        return {k: v for k, v in floats.items() if v is not None}
    return None


def pairs(items: list[Any]) -> dict[str, float] | None:
    """Class -> probability from a list of ``{label, probability}``-like items."""
    result: dict[str, float] = {}
    for item in items:
        if not isinstance(item, dict):
            return None
        name = next((item[k] for k in ("class", "label", "name") if k in item), None)
        prob = next((number(item[k]) for k in ("probability", "score", "prob") if k in item), None)
        if name is None or prob is None:
            return None
        result[str(name)] = prob
    return result or None


def field_of(body: Any, *keys: str) -> str | None:
    """Return the first of ``keys`` present in the answer (a dict, or a list of one dict)."""
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    if isinstance(body, dict):
        for key in keys:
            if isinstance(body.get(key), str | int | float) and not isinstance(body[key], bool):
                return str(body[key])
    return None


def in_distribution(body: Any) -> InDistribution | None:
    """The ``in_distribution`` block (the OOD guard's verdict)."""
    block = body.get("in_distribution") if isinstance(body, dict) else None
    if not isinstance(block, dict) or not isinstance(block.get("ok"), bool):
        return None
    score, threshold = number(block.get("score")), number(block.get("threshold"))
    if score is None or threshold is None:
        return None
    return InDistribution(ok=block["ok"], score=score, threshold=threshold)


def heatmap(body: Any) -> Heatmap | None:
    """The ``explanation`` block as a PNG heatmap."""
    explanation = body.get("explanation") if isinstance(body, dict) else None
    if not isinstance(explanation, dict) or explanation.get("encoding") != "png-base64":
        return None
    try:
        png = base64.b64decode(str(explanation.get("heatmap", "")), validate=True)
    except (binascii.Error, ValueError):
        return None
    if not png.startswith(b"\x89PNG"):
        return None
    return Heatmap(
        png=png, target=str(explanation.get("target", "")), method=str(explanation.get("method", ""))
    )


def decision(body: Any) -> Decision | None:
    """The ``decision`` block of an answer, or ``None`` when absent or malformed."""
    block = body.get("decision") if isinstance(body, dict) else None
    if not isinstance(block, dict) or not isinstance(block.get("label"), str):
        return None
    score, threshold = number(block.get("score")), number(block.get("threshold"))
    if score is None or threshold is None:
        return None
    return Decision(
        label=block["label"], score=score, threshold=threshold, target=str(block.get("target", ""))
    )
