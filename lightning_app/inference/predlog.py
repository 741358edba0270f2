"""The prediction log: one structured JSON line per answered request, for Cloud Logging.

Cloud Run sends a container's stdout to Cloud Logging and parses a line that is one JSON
object as a structured entry (``severity``, ``message``, ``time``,
``logging.googleapis.com/labels`` are lifted into the LogEntry, the rest becomes
``jsonPayload``). A prediction record holds what the drift report
(:mod:`lightning_app.monitor`) compares with the training data, and nothing a client
chose: no pixels, no file name, no header value other than TorchServe's own request id.

* model name and version, the predicted class, every probability, the OOD score when
  the answer has one (``in_distribution``);
* input facts: the source format, mode, width and height (read from the image header
  only, no second pixel decode), the byte size, and the mean/std intensity of the
  preprocessed ``uint8`` pixels (scaled to ``[0, 1]``);
* a compact embedding: the penultimate features projected on the PCA basis fitted on
  the train split at export (:data:`~lightning_app.inference.artefacts.EMBEDDING_PCA`).

Environment (read once when the handler loads):

| variable | default | meaning |
|---|---|---|
| ``PREDLOG_ENABLED`` | ``1`` | ``0`` turns the prediction log off (bad requests included) |
| ``PREDLOG_SAMPLE`` | ``1.0`` | fraction of answered predictions logged (bad requests: always) |
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image

from lightning_app.inference import artefacts
from lightning_app.inference.forward import Backend, Forward
from lightning_app.inference.threads import one_thread

logger = logging.getLogger(__name__)

#: Version of the record layout (``schema`` field); the log readers check it.
SCHEMA = 1
#: Cloud Logging's special fields.
LABELS = "logging.googleapis.com/labels"
#: ``event`` of a prediction record and of a refused request.
PREDICTION, BAD_REQUEST = "prediction", "bad_request"


@dataclass(frozen=True)
class Settings:
    """Whether and how often to log (see the module docstring for the variables)."""

    enabled: bool = True
    sample: float = 1.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read ``PREDLOG_ENABLED`` and ``PREDLOG_SAMPLE``; bad values fall back to the defaults."""
        env = os.environ if env is None else env
        enabled = env.get("PREDLOG_ENABLED", "1").strip().lower() not in ("0", "false", "no", "off")
        try:
            sample = min(1.0, max(0.0, float(env.get("PREDLOG_SAMPLE", "1.0"))))
        except ValueError:
            sample = 1.0
        return cls(enabled=enabled, sample=sample)

    def keep(self, rng: random.Random | None = None) -> bool:
        """Whether to log this prediction (a coin flip with probability ``sample``)."""
        if not self.enabled:
            return False
        return self.sample >= 1.0 or (rng or random).random() < self.sample


def source_facts(data: bytes) -> dict[str, Any]:
    """Format, mode, width, height and byte size from the image header (no pixel decode)."""
    facts: dict[str, Any] = {"format": None, "mode": None, "width": None, "height": None, "bytes": len(data)}
    try:
        with Image.open(io.BytesIO(data)) as image:
            facts.update(format=image.format, mode=image.mode, width=image.width, height=image.height)
    except Exception:  # the decoder already accepted these bytes; facts stay unknown
        pass
    return facts


def intensity(pixels: torch.Tensor) -> tuple[list[float], list[float]]:
    """Mean and std of each preprocessed ``uint8 [N, 1, S, S]`` image, scaled to ``[0, 1]``."""
    flat = pixels.reshape(len(pixels), -1).numpy()  # uint8: numpy reduces it without a float copy
    mean, std = flat.mean(axis=1, dtype=np.float64), flat.std(axis=1, dtype=np.float64)
    return (mean / 255.0).tolist(), (std / 255.0).tolist()


class Projection:
    """The PCA basis of the penultimate features: ``features [N, D] -> [N, K]``."""

    def __init__(self, mean: torch.Tensor, components: torch.Tensor) -> None:
        self.mean = mean.float()
        self.components = components.float()

    @classmethod
    def load(cls, model_dir: Path) -> Projection | None:
        """The exported projection, or ``None`` for models exported without one."""
        path = Path(model_dir) / artefacts.EMBEDDING_PCA
        if not path.is_file():
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)
        return cls(state["mean"], state["components"])

    @classmethod
    def fit(cls, features: torch.Tensor, dim: int) -> tuple[Projection, torch.Tensor]:
        """Fit on ``features [N, D]``; returns the projection and its explained-variance ratios."""
        x = features.double()
        mean = x.mean(dim=0)
        _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
        k = min(dim, vh.shape[0])
        variance = s**2
        return cls(mean.float(), vh[:k].float()), (variance[:k] / variance.sum()).float()

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors to save (``torch.save``; loadable with ``weights_only=True``)."""
        return {"mean": self.mean, "components": self.components}

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """Project ``features [N, D]`` to ``[N, K]`` (on one thread: a few microseconds of work)."""
        with one_thread():
            return (features.float() - self.mean) @ self.components.T


class FeatureTap:
    """Wraps a backend and remembers the last :class:`Forward`, so the log reuses its features."""

    def __init__(self, backend: Backend) -> None:
        self.inner = backend
        self.name = backend.name
        self.has_cam = bool(getattr(backend, "has_cam", False))
        self.last: Forward | None = None

    def __call__(self, x: torch.Tensor, *, cam: bool = False) -> Forward:
        """Run the wrapped backend and keep its output."""
        self.last = self.inner(x, cam=cam)
        return self.last


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


@dataclass
class Request:
    """What the log needs of one decoded request (the handler fills it)."""

    index: int
    data: bytes
    request_id: str | None
    decode_ms: float


class PredictionLog:
    """Builds and writes the records of one batch; owns the feature tap and the projection."""

    def __init__(
        self,
        engine: Any,
        model_name: str,
        *,
        settings: Settings | None = None,
        stream: IO[str] | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.model_name = model_name
        self.version = str(engine.version)
        self.projection = Projection.load(engine.model_dir)
        self.stream = stream
        backend = engine.backend
        self.tap = backend if isinstance(backend, FeatureTap) else FeatureTap(backend)
        engine.backend = self.tap

    def predictions(
        self,
        requests: Sequence[Request],
        pixels: torch.Tensor,
        answers: Sequence[Mapping[str, Any]],
        inference_ms: float,
    ) -> list[dict[str, Any]]:
        """Records of a batch's answered requests (sampled), written out; never raises."""
        try:
            return self._predictions(requests, pixels, answers, inference_ms)
        except Exception as exc:  # the log must never cost an answer
            logger.warning("prediction log failed: %s: %s", type(exc).__name__, exc)
            return []

    def _predictions(
        self,
        requests: Sequence[Request],
        pixels: torch.Tensor,
        answers: Sequence[Mapping[str, Any]],
        inference_ms: float,
    ) -> list[dict[str, Any]]:
        keep = [i for i in range(len(requests)) if self.settings.keep()]
        if not keep:
            return []
        means, stds = intensity(pixels[keep])
        forward = self.tap.last
        embeddings: list[list[float]] | None = None
        if self.projection is not None and forward is not None and len(forward.features) == len(pixels):
            embeddings = self.projection(forward.features[keep]).tolist()
        records = [
            prediction_record(
                answer=answers[i],
                request_id=requests[i].request_id,
                model_name=self.model_name,
                facts=source_facts(requests[i].data),
                intensity_mean=means[j],
                intensity_std=stds[j],
                embedding=None if embeddings is None else embeddings[j],
                timing_ms={"decode": requests[i].decode_ms, "inference": inference_ms},
            )
            for j, i in enumerate(keep)
        ]
        write(records, self.stream)
        return records

    def refused(self, code: int, message: str, request_id: str | None, size: int | None) -> None:
        """Write the record of a refused request (never sampled away while the log is on)."""
        if self.settings.enabled:
            record = bad_request_record(
                code=code,
                message=message,
                request_id=request_id,
                model_name=self.model_name,
                version=self.version,
                size=size,
            )
            try:
                write([record], self.stream)
            except Exception as exc:  # a closed stdout must not fail the request
                logger.warning("prediction log failed: %s: %s", type(exc).__name__, exc)
