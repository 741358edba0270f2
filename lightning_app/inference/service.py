"""The serving core every runtime shares: requests in, JSON replies out.

A runtime adapter (the TorchServe handler ``serve/handler.py``, the LitServe app
``serve/litserve_app.py``) turns its own request objects into :class:`Incoming` values,
hands a batch of them to :meth:`ModelService.serve` and turns each :class:`Reply` into its
own response. Everything users see is decided here, once: the request limits, the 4xx JSON
errors, the answers of ``/predictions`` and ``/explanations``, the prediction log and the
model metrics. A bad request fails alone with its 4xx while the rest of its batch is
served; each request is answered as its own kind (prediction or explanation).

An :class:`Incoming` row is what TorchServe hands a handler: a ``dict`` holding the raw
body as ``body``, or the multipart fields (the image as ``data``, the optional explanation
``target`` as ``target``). The settings come from the adapter
(:class:`~lightning_app.inference.settings.ServeSettings`, read once at its start).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_app.inference import colour
from lightning_app.inference.artefacts import MODEL_NAME
from lightning_app.inference.engine import InferenceEngine, TorchMissingError
from lightning_app.inference.explain import Explainer
from lightning_app.inference.forward import Forward
from lightning_app.inference.metrics import ModelMetrics
from lightning_app.inference.predlog import PredictionLog
from lightning_app.inference.records import Request, RequestError, error_type
from lightning_app.inference.settings import MAX_IMAGE_BYTES, ServeSettings
from lightning_app.inference.threads import one_blas_thread
from lightning_app.transforms import ImageDecodeError

logger = logging.getLogger(__name__)

FORM_MESSAGE = (
    "the image was sent as a URL-encoded form (curl's default for --data-binary): send the raw bytes with "
    "'Content-Type: application/octet-stream' (or image/jpeg, image/png), or as the multipart field 'data'"
)

#: Seconds an overloaded server tells a refused client to wait (``Retry-After``).
RETRY_AFTER_S = 1


def overloaded(limit: int) -> RequestError:
    """The answer to a request beyond ``limit`` in progress: 503, to be sent with ``Retry-After``."""
    return RequestError(
        503, f"server busy: {limit} requests already in progress; retry after {RETRY_AFTER_S} s"
    )


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


def body_size(row: Any) -> int | None:
    """Byte size of a request's body, without trusting anything else in it."""
    value = row.get("data", row.get("body")) if isinstance(row, dict) else None
    return len(value) if isinstance(value, bytes | bytearray | str) else None


@dataclass
class Incoming:
    """One request as a runtime hands it over (picklable: LitServe queues it to a worker)."""

    #: The raw body as ``{"body": ...}``, or the multipart fields (``data``, ``target``). Left
    #: out of ``repr``: LitServe formats each request into a debug line, logged or not.
    row: Any = field(repr=False)
    #: Whether it came as ``application/x-www-form-urlencoded`` (mangled image bytes).
    form: bool = False
    #: Whether it came through ``/explanations``.
    explain: bool = False
    #: The ``X-Target`` header (the multipart field ``target`` wins).
    target: str | None = None
    #: The runtime's id of the request, echoed as ``X-Request-Id`` and in the prediction log.
    request_id: str | None = None

    def requested_target(self) -> str | None:
        """The ``target`` of an explanation: the multipart field ``target``, else the header."""
        value = self.row.get("target") if isinstance(self.row, dict) else None
        if isinstance(value, bytearray | bytes):
            value = bytes(value).decode("utf-8", "replace")
        if value is None:
            value = self.target
        return None if value is None else str(value)


@dataclass
class Reply:
    """One request's answer: HTTP status and JSON body (an answer, or ``RequestError.body()``)."""

    status: int
    body: str
    request_id: str | None = None

    @property
    def phrase(self) -> str:
        """The HTTP reason phrase of :attr:`status`."""
        return "OK" if self.status == 200 else RequestError(self.status, "").phrase


class ModelService:
    """A loaded model serving batches of :class:`Incoming` requests (see the module docstring)."""

    def __init__(self) -> None:
        self.initialized = False
        self.settings = ServeSettings()
        self.engine: InferenceEngine | None = None
        self.explainer: Explainer | None = None
        #: Why explanations are unavailable (``None``: they are, or nothing is loaded yet).
        self.no_explainer: str | None = None
        self.model_name = MODEL_NAME
        self.log: PredictionLog | None = None
        self.metrics = ModelMetrics(None, MODEL_NAME)

    def load(
        self,
        model_dir: Path,
        settings: ServeSettings,
        *,
        workers: int = 1,
        model_name: str = MODEL_NAME,
        metrics_cache: Any = None,
    ) -> None:
        """Load an unpacked ``.mar`` directory with the adapter's ``settings`` for one of ``workers``.

        From here on this process's numpy runs its matrix products on one thread
        (:func:`~lightning_app.inference.threads.one_blas_thread`): it is a serving worker.
        """
        one_blas_thread()
        self.settings = settings
        self.model_name = model_name
        self.engine = InferenceEngine(
            Path(model_dir), threads=settings.threads(workers), precision=settings.precision
        )
        self.engine.warm_up()
        try:
            self.explainer = Explainer(self.engine, method=settings.heatmap)
        except (ValueError, TorchMissingError) as exc:  # no class-activation layer known; or no torch
            self.no_explainer = str(exc)
            logger.warning("explanations unavailable: %s", exc)
        self.metrics = ModelMetrics(metrics_cache, model_name)
        self.log = PredictionLog(
            self.engine, model_name, settings=settings.log, on_failure=self.metrics.log_failure
        )
        self.initialized = True
        logger.info(
            "loaded %s (%s, %s, classes %s, version %s)",
            model_name,
            self.engine.meta["backbone"],
            self.engine.backend.name,
            ",".join(self.engine.class_names),
            self.engine.version,
        )

    def decode(self, row: Any) -> tuple[np.ndarray, float]:
        """One request -> ``uint8 [1, S, S]`` through the shared preprocessing, and its colour."""
        data = payload(row, self.settings.max_image_bytes)
        assert self.engine is not None, "load() first"
        try:
            return self.engine.read(data)
        except ImageDecodeError as exc:
            raise RequestError(400, str(exc)) from None
        except Exception as exc:  # an unexpected decoder failure stays this request's problem
            logger.warning("decode failed: %s: %s", type(exc).__name__, exc)
            raise RequestError(400, f"could not decode the image ({type(exc).__name__})") from None

    def predict(self, pixels: np.ndarray) -> tuple[Forward, list[dict[str, Any]]]:
        """``uint8 [N, 1, S, S]`` -> the forward pass and one JSON-ready answer per image."""
        assert self.engine is not None, "load() first"
        forward = self.engine.forward(pixels)
        return forward, [{**answer, "model": self.model_name} for answer in self.engine.answers(forward)]

    def explain(self, pixels: np.ndarray, targets: list[str | None]) -> tuple[Forward, list[dict[str, Any]]]:
        """``uint8 [N, 1, S, S]`` -> the forward pass and the prediction block + heatmap per image."""
        assert self.explainer is not None, "explanations unavailable"
        explained = self.explainer.explain(pixels, list(targets))
        answers = self.explainer.answers_of(explained)
        return explained.forward, [{**answer, "model": self.model_name} for answer in answers]

    def deferred(self) -> int:
        """Scans the served cascade has sent on to the other members since start (0: no cascade)."""
        return int(getattr(self.engine.backend, "deferred", 0)) if self.engine is not None else 0

    def _check_target(self, incoming: Incoming) -> str | None:
        target = incoming.requested_target()
        if self.explainer is None:
            backbone = self.engine.meta["backbone"] if self.engine else "?"
            why = f": {self.no_explainer}" if self.no_explainer else ""
            raise RequestError(400, f"explanations are not available for backbone {backbone!r}{why}")
        try:
            self.explainer.target_index(target, 0)
        except ValueError as exc:
            raise RequestError(400, str(exc)) from None
        return target

    def _decode_one(self, incoming: Incoming) -> tuple[np.ndarray, float] | RequestError:
        try:
            if incoming.form:  # even when the form parser left nothing
                raise RequestError(415, FORM_MESSAGE)
            return self.decode(incoming.row)
        except RequestError as exc:
            return exc

    def serve(self, batch: list[Incoming]) -> list[Reply]:
        """Serve one batch; bad requests fail alone with a 4xx and a JSON body.

        Every answered or refused request leaves a prediction-log line on stdout
        (:mod:`lightning_app.inference.predlog`) and updates the model metrics.
        """
        results = [Reply(200, "", item.request_id) for item in batch]
        pixels: list[np.ndarray] = []
        good: list[Request] = []
        explained: dict[int, str | None] = {}  # request index -> target, for /explanations
        for idx, item in enumerate(batch):
            started = time.perf_counter()
            outcome = self._decode_one(item)
            if not isinstance(outcome, RequestError) and item.explain:
                try:
                    explained[idx] = self._check_target(item)
                except RequestError as exc:
                    outcome = exc
            seconds = time.perf_counter() - started
            if isinstance(outcome, RequestError):
                logger.info("request %d refused: %d %s", idx, outcome.code, outcome.message)
                results[idx] = Reply(outcome.code, json.dumps(outcome.body()), item.request_id)
                self.metrics.bad_request(outcome.code, error_type(outcome.code, outcome.message))
                if self.log is not None:
                    self.log.refused(outcome.code, outcome.message, item.request_id, body_size(item.row))
            else:
                self.metrics.decode(seconds)
                pixels.append(outcome[0])
                data = payload(item.row, self.settings.max_image_bytes)
                good.append(Request(idx, data, item.request_id, seconds * 1e3, colour=outcome[1]))
        limit = self.engine.colour_limit if self.engine is not None else None
        for kind in ("predictions", "explanations"):  # each request answered as its own kind
            chosen = [
                (r, p)
                for r, p in zip(good, pixels, strict=True)
                if (r.index in explained) == (kind == "explanations")
            ]
            if not chosen:
                continue
            requests = [r for r, _ in chosen]
            stacked = np.stack([p for _, p in chosen])
            started, deferred = time.perf_counter(), self.deferred()
            if kind == "predictions":
                forward, answers = self.predict(stacked)
            else:
                forward, answers = self.explain(stacked, [explained[r.index] for r in requests])
            seconds = time.perf_counter() - started
            self.metrics.inference(seconds)
            self.metrics.deferred(self.deferred() - deferred)
            for request, answer in zip(requests, answers, strict=True):
                colour.check(answer, request.colour, limit)
                results[request.index].body = json.dumps(answer)
                self.metrics.prediction(answer, request.request_id)
            if self.log is not None:
                self.log.predictions(requests, stacked, answers, seconds * 1e3, forward=forward)
        return results
