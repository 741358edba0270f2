"""The prediction-log record: its schema, its Cloud Logging envelope and the error types.

Cloud Run sends a container's stdout to Cloud Logging and parses a line that is one JSON
object as a structured entry (``severity``, ``message``, ``time``,
``logging.googleapis.com/labels`` are lifted into the LogEntry, the rest becomes
``jsonPayload``). A prediction record (:func:`prediction_record`) holds what the drift report
(:mod:`lightning_app.monitor`) compares with the training data, and nothing a client chose:
no pixels, no file name, no header value other than TorchServe's own request id.

* model name and version, the predicted class, every probability, the OOD score when the
  answer has one (``in_distribution``);
* input facts and intensity (:mod:`lightning_app.inference.features`), timings;
* a compact embedding (the PCA projection of the penultimate features).

A refused request's record (:func:`bad_request_record`) carries its status and a fixed error
type (:func:`error_type`), never the client's words. :class:`Request` is what the log needs of
one decoded request; :mod:`lightning_app.inference.predlog` builds and writes the records.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

#: Version of the record layout (``schema`` field); the log readers check it.
SCHEMA = 1
#: Cloud Logging's special fields.
LABELS = "logging.googleapis.com/labels"
#: ``event`` of a prediction record and of a refused request.
PREDICTION, BAD_REQUEST = "prediction", "bad_request"


@dataclass
class Request:
    """What the log needs of one decoded request (the handler fills it)."""

    index: int
    data: bytes
    request_id: str | None
    decode_ms: float
    #: The image's mean chroma (:mod:`~lightning_app.inference.colour`; 0: not measured).
    colour: float = 0.0


def _rounded(values: Sequence[float], digits: int = 5) -> list[float | None]:
    return [round(v, digits) if math.isfinite(v) else None for v in values]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _envelope(
    severity: str, message: str, event: str, *, request_id: str | None, model_name: str, version: str
) -> dict[str, Any]:
    """The Cloud Logging fields every record shares, in the order records list them."""
    return {
        "severity": severity,
        "message": message,
        "time": _now(),
        LABELS: {"component": "prediction-log", "model": model_name, "model_version": version},
        "event": event,
        "schema": SCHEMA,
        "request_id": request_id,
        "model": {"name": model_name, "version": version},
    }


def prediction_record(
    *,
    answer: Mapping[str, Any],
    request_id: str | None,
    model_name: str,
    facts: Mapping[str, Any],
    intensity_mean: float,
    intensity_std: float,
    embedding: Sequence[float] | None,
    timing_ms: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The log record of one answered prediction (a JSON-ready dict)."""
    probabilities = {str(p["label"]): float(p["probability"]) for p in answer["probabilities"]}
    predicted = str(answer["prediction"])
    confidence = probabilities[predicted]
    ood = answer.get("in_distribution")
    version = str(answer.get("version", ""))
    return {
        **_envelope(
            "INFO",
            f"{model_name} predicted {predicted} ({confidence:.3f})",
            PREDICTION,
            request_id=request_id,
            model_name=model_name,
            version=version,
        ),
        "prediction": {
            "class": predicted,
            "confidence": round(confidence, 6),
            "probabilities": {k: round(v, 6) for k, v in probabilities.items()},
        },
        "ood": (
            {"score": float(ood["score"]), "ok": bool(ood.get("ok", True))}
            if isinstance(ood, Mapping) and isinstance(ood.get("score"), int | float)
            else None
        ),
        "input": {
            **{k: facts.get(k) for k in ("format", "mode", "width", "height", "bytes")},
            "intensity_mean": round(intensity_mean, 5),
            "intensity_std": round(intensity_std, 5),
        },
        "embedding": None if embedding is None else _rounded(embedding, 4),
        "timing_ms": {k: round(v, 3) for k, v in (timing_ms or {}).items()},
    }


class RequestError(Exception):
    """One request in a batch is unusable: its HTTP status and a message for the user (adapters raise it)."""

    PHRASES = {
        400: "Bad Request",
        408: "Request Timeout",
        413: "Payload Too Large",
        415: "Unsupported Media Type",
        503: "Service Unavailable",
        504: "Gateway Timeout",
    }

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def phrase(self) -> str:
        """The HTTP reason phrase of :attr:`code`."""
        return self.PHRASES.get(self.code, "Bad Request")

    def body(self) -> dict[str, Any]:
        """Return the JSON error body, shaped like TorchServe's own errors."""
        kind = "BadInput" if self.code < 500 else "ServiceUnavailable" if self.code == 503 else "Timeout"
        return {"code": self.code, "type": kind, "message": self.message}


#: Prefix of our error messages -> the ``error.type`` of a bad-request record.
ERROR_TYPES = (
    ("empty input", "empty"),
    ("not an image", "not_an_image"),
    ("unsupported image format", "unsupported_format"),
    ("corrupt or truncated", "corrupt"),
    ("image too large", "too_large"),
    ("the image was sent as a url-encoded form", "form_encoded"),
    ("expected image bytes", "not_bytes"),
    ("multipart request has no 'data'", "no_data_field"),
    ("malformed request", "malformed"),
    ("could not decode", "decode_failed"),
)


def error_type(code: int, message: str) -> str:
    """A short, fixed name for a refused request (never the client's words)."""
    lowered = message.lower()
    for prefix, name in ERROR_TYPES:
        if lowered.startswith(prefix):
            return name
    return f"http_{code}"


def bad_request_record(
    *, code: int, message: str, request_id: str | None, model_name: str, version: str, size: int | None
) -> dict[str, Any]:
    """The log record of a refused request: its status and error type, no content."""
    kind = error_type(code, message)
    return {
        **_envelope(
            "WARNING",
            f"{model_name} refused a request: {code} {kind}",
            BAD_REQUEST,
            request_id=request_id,
            model_name=model_name,
            version=version,
        ),
        "error": {"status": code, "type": kind},
        "input": {"bytes": size},
    }


def dumps(record: Mapping[str, Any]) -> str | None:
    """One compact JSON line, or ``None`` for a record that is not valid JSON (NaN, objects)."""
    try:
        return json.dumps(record, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return None


def write(records: Sequence[Mapping[str, Any]], stream: IO[str] | None = None) -> None:
    """Write records as JSON lines in one call and flush (one line each, never split)."""
    lines = [line for line in map(dumps, records) if line is not None]
    if lines:
        out = stream or sys.stdout
        out.write("".join(line + "\n" for line in lines))
        out.flush()
