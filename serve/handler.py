"""TorchServe handler for the brain-MRI classifier (packed into ``brain_mri.mar``).

It is the TorchServe adapter only: requests in, :mod:`lightning_app.inference` call,
JSON out. ``inference`` imports ``transforms`` (THE preprocessing, shared with the
DataModule) and ``models.backbones``; never Lightning, the LightningModule or the
DataModule. The ``lightning_app`` package is installed in the serving environment
(``uv sync`` here, the serving image in production) rather than copied into the
``.mar``: one installed copy is the single source of truth, and the archive stays a pure
model artefact (weights + class names + metadata).

Requests arrive in batches (``batchSize``/``maxBatchDelay`` in ``model-config.yaml``).
Each request is decoded on its own; a bad one gets its own 4xx status and JSON error
body through ``context.set_response_status(code, phrase, idx)`` while the rest of the
batch is served. ``POST /explanations/<model>`` reaches the same :func:`handle`, marked by
the frontend with the request header ``explain: True``; a batch may mix both kinds, and
each request is answered as its own kind (:mod:`lightning_app.inference.explain`). The
optional ``target`` (class name or index) of an explanation comes as the multipart field
``target`` or the request header ``X-Target`` (TorchServe 0.12 does not forward query
parameters of ``/predictions`` and ``/explanations`` to the handler). The serving
environment variables are read once, in :meth:`BrainMRIHandler.initialize`
(:class:`~lightning_app.inference.settings.ServeSettings`), and passed down.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from lightning_app.inference.artefacts import MODEL_NAME
from lightning_app.inference.engine import InferenceEngine
from lightning_app.inference.explain import Explainer
from lightning_app.inference.forward import Forward
from lightning_app.inference.metrics import ModelMetrics
from lightning_app.inference.predlog import PredictionLog
from lightning_app.inference.records import Request, RequestError, error_type
from lightning_app.inference.settings import MAX_IMAGE_BYTES, ServeSettings
from lightning_app.transforms import ImageDecodeError

logger = logging.getLogger(__name__)


def payload(row: Any, limit: int = MAX_IMAGE_BYTES) -> bytes:
    """The image bytes of one request (raw body or multipart field ``data``), at most ``limit``."""
    if not isinstance(row, dict):
        raise RequestError(400, "malformed request")
    if "data" in row:
        value = row["data"]
    elif "body" in row:
        value = row["body"]
    elif row:
        fields = ", ".join(sorted(str(k) for k in row))
        raise RequestError(400, f"multipart request has no 'data' field (got: {fields})")
    else:
        value = b""
    if isinstance(value, bytearray | bytes):
        data = bytes(value)
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogateescape")
    else:
        raise RequestError(415, "expected image bytes (raw body or multipart field 'data'), got JSON")
    if not data:
        raise RequestError(400, "empty input: no image bytes received")
    if len(data) > limit:
        raise RequestError(413, f"image too large: {len(data):,} bytes exceeds the {limit:,} byte limit")
    return data


FORM_MESSAGE = (
    "the image was sent as a URL-encoded form (curl's default for --data-binary): send the raw bytes with "
    "'Content-Type: application/octet-stream' (or image/jpeg, image/png), or as the multipart field 'data'"
)


def ask(context: Any, method: str, *args: Any) -> Any:
    """``context.<method>(*args)``, or ``None`` where this context (or request index) has no answer."""
    try:
        return getattr(context, method)(*args)
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def is_form(context: Any, idx: int) -> bool:
    """Whether request ``idx`` came as ``application/x-www-form-urlencoded`` (mangled image bytes)."""
    content_type = ask(context, "get_request_header", idx, "Content-Type") or ""
    return str(content_type).split(";")[0].strip().lower() == "application/x-www-form-urlencoded"


def request_id(context: Any, idx: int) -> str | None:
    """TorchServe's id of request ``idx`` (``None`` outside TorchServe)."""
    rid = ask(context, "get_request_id", idx)
    return None if rid is None else str(rid)


def body_size(row: Any) -> int | None:
    """Byte size of a request's body, without trusting anything else in it."""
    value = row.get("data", row.get("body")) if isinstance(row, dict) else None
    return len(value) if isinstance(value, bytes | bytearray | str) else None


def is_explain(context: Any, idx: int) -> bool:
    """Whether request ``idx`` came through ``/explanations`` (TorchServe's ``explain`` header)."""
    return str(ask(context, "get_request_header", idx, "explain")) == "True"


#: Request header naming the class to explain (TorchServe 0.12 drops query parameters on
#: ``/predictions`` and ``/explanations``, but forwards every header).
TARGET_HEADER = "X-Target"


def header(context: Any, idx: int, name: str) -> str | None:
    """Request header ``name`` of request ``idx``, matched case-insensitively."""
    headers = ask(context, "get_all_request_header", idx)
    if isinstance(headers, dict):
        wanted = name.lower()
        found = [v for k, v in headers.items() if str(k).lower() == wanted and isinstance(v, str)]
        return found[0] if found else None
    value = ask(context, "get_request_header", idx, name)
    return value if isinstance(value, str) else None


def requested_target(row: Any, context: Any, idx: int) -> str | None:
    """The ``target`` of an explanation: the multipart field ``target``, else the ``X-Target`` header."""
    value = row.get("target") if isinstance(row, dict) else None
    if isinstance(value, bytearray | bytes):
        value = bytes(value).decode("utf-8", "replace")
    if value is None:
        value = header(context, idx, TARGET_HEADER)
    return None if value is None else str(value)


class BrainMRIHandler:
    """The TorchServe adapter: requests in, :class:`InferenceEngine` call, JSON out."""

    def __init__(self) -> None:
        self.initialized = False
        self.settings = ServeSettings()
        self.engine: InferenceEngine | None = None
        self.explainer: Explainer | None = None
        self.model_name = MODEL_NAME
        self.log: PredictionLog | None = None
        self.metrics = ModelMetrics(None, MODEL_NAME)

    def initialize(self, context: Any) -> None:
        """Read the settings (the environment, once) and load the model dir TorchServe unpacked."""
        self.settings = settings = ServeSettings.from_env()
        workers = int((getattr(context, "model_yaml_config", None) or {}).get("minWorkers", 1))
        self.engine = InferenceEngine(
            Path(context.system_properties["model_dir"]),
            threads=settings.threads(workers),
            precision=settings.precision,
        )
        self.model_name = str(context.manifest.get("model", {}).get("modelName", self.model_name))
        self.engine.warm_up()
        try:
            self.explainer = Explainer(self.engine)
        except ValueError as exc:  # a backbone without a known class-activation layer
            logger.warning("explanations unavailable: %s", exc)
        self.log = PredictionLog(self.engine, self.model_name, settings=settings.log)
        self.metrics = ModelMetrics(getattr(context, "metrics", None), self.model_name)
        self.initialized = True
        logger.info(
            "loaded %s (%s, %s, classes %s, version %s)",
            self.model_name,
            self.engine.meta["backbone"],
            self.engine.backend.name,
            ",".join(self.engine.class_names),
            self.engine.version,
        )

    def decode(self, row: Any) -> torch.Tensor:
        """One request -> ``uint8 [1, S, S]`` through the shared preprocessing."""
        data = payload(row, self.settings.max_image_bytes)
        assert self.engine is not None, "initialize() first"
        try:
            return self.engine.decode(data)
        except ImageDecodeError as exc:
            raise RequestError(400, str(exc)) from None
        except Exception as exc:  # an unexpected decoder failure stays this request's problem
            logger.warning("decode failed: %s: %s", type(exc).__name__, exc)
            raise RequestError(400, f"could not decode the image ({type(exc).__name__})") from None

    def predict(self, pixels: torch.Tensor) -> tuple[Forward, list[dict[str, Any]]]:
        """``uint8 [N, 1, S, S]`` -> the forward pass and one JSON-ready answer per image."""
        assert self.engine is not None, "initialize() first"
        forward = self.engine.forward(pixels)
        return forward, [{**answer, "model": self.model_name} for answer in self.engine.answers(forward)]

    def explain(
        self, pixels: torch.Tensor, targets: list[str | None]
    ) -> tuple[Forward, list[dict[str, Any]]]:
        """``uint8 [N, 1, S, S]`` -> the forward pass and the prediction block + heatmap per image."""
        assert self.explainer is not None, "explanations unavailable"
        explained = self.explainer.explain(pixels, list(targets))
        answers = self.explainer.answers_of(explained)
        return explained.forward, [{**answer, "model": self.model_name} for answer in answers]

    def _check_target(self, row: Any, context: Any, idx: int) -> str | None:
        target = requested_target(row, context, idx)
        if self.explainer is None:
            backbone = self.engine.meta["backbone"] if self.engine else "?"
            raise RequestError(400, f"explanations are not available for backbone {backbone!r}")
        try:
            self.explainer.target_index(target, 0)
        except ValueError as exc:
            raise RequestError(400, str(exc)) from None
        return target

    def _decode_one(self, row: Any, idx: int, context: Any) -> torch.Tensor | RequestError:
        try:
            if is_form(context, idx):  # even when the form parser left nothing
                raise RequestError(415, FORM_MESSAGE)
            return self.decode(row)
        except RequestError as exc:
            return exc

    def handle(self, data: list[Any], context: Any) -> list[str]:
        """Serve one batch; bad requests fail alone with a 4xx and a JSON body.

        Every answered or refused request leaves a prediction-log line on stdout
        (:mod:`lightning_app.inference.predlog`) and updates the model metrics; its
        TorchServe request id is echoed in the ``X-Request-Id`` response header.
        """
        results: list[str] = [""] * len(data)
        pixels: list[torch.Tensor] = []
        good: list[Request] = []
        explained: dict[int, str | None] = {}  # request index -> target, for /explanations
        for idx, row in enumerate(data):
            rid = request_id(context, idx)
            started = time.perf_counter()
            outcome = self._decode_one(row, idx, context)
            if not isinstance(outcome, RequestError) and is_explain(context, idx):
                try:
                    explained[idx] = self._check_target(row, context, idx)
                except RequestError as exc:
                    outcome = exc
            seconds = time.perf_counter() - started
            if isinstance(outcome, RequestError):
                logger.info("request %d refused: %d %s", idx, outcome.code, outcome.message)
                context.set_response_status(outcome.code, outcome.phrase, idx)
                results[idx] = json.dumps(outcome.body())
                self.metrics.bad_request(outcome.code, error_type(outcome.code, outcome.message))
                if self.log is not None:
                    self.log.refused(outcome.code, outcome.message, rid, body_size(row))
            else:
                self.metrics.decode(seconds)
                pixels.append(outcome)
                good.append(Request(idx, payload(row, self.settings.max_image_bytes), rid, seconds * 1e3))
        for kind in ("predictions", "explanations"):  # each request answered as its own kind
            chosen = [
                (r, p)
                for r, p in zip(good, pixels, strict=True)
                if (r.index in explained) == (kind == "explanations")
            ]
            if not chosen:
                continue
            requests = [r for r, _ in chosen]
            batch = torch.stack([p for _, p in chosen])
            started = time.perf_counter()
            if kind == "predictions":
                forward, answers = self.predict(batch)
            else:
                forward, answers = self.explain(batch, [explained[r.index] for r in requests])
            seconds = time.perf_counter() - started
            self.metrics.inference(seconds)
            for request, answer in zip(requests, answers, strict=True):
                results[request.index] = json.dumps(answer)
                self.metrics.prediction(answer, request.request_id)
            if self.log is not None:
                self.log.predictions(requests, batch, answers, seconds * 1e3, forward=forward)
        for idx in range(len(data)):
            context.set_response_content_type(idx, "application/json")
            rid = request_id(context, idx)
            if rid is not None:
                context.set_response_header(idx, "X-Request-Id", rid)
        return results


_service = BrainMRIHandler()


def handle(data: list[Any] | None, context: Any) -> list[str] | None:
    """TorchServe's module-level entry point (called with ``data=None`` on load)."""
    if not _service.initialized:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
