"""The prediction log: one structured JSON line per answered or refused request, for Cloud Logging.

:class:`PredictionLog` builds the records of a batch (:mod:`lightning_app.inference.records`)
from the requests, their preprocessed pixels, the answers and the forward pass that gave
them: the caller (the handler, the export's reference profile, the drift simulation) hands
it that :class:`~lightning_app.inference.forward.Forward`, so the embedding reuses the
served pass's features (:func:`~lightning_app.inference.features.embeddings`) and no second
pass runs. Whether and how often it writes comes from
:class:`~lightning_app.inference.settings.LogSettings` (``PREDLOG_ENABLED``,
``PREDLOG_SAMPLE``), read by the handler when it loads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from lightning_app.inference.features import Projection, embeddings, intensity, source_facts
from lightning_app.inference.forward import Forward
from lightning_app.inference.records import Request, bad_request_record, prediction_record, write
from lightning_app.inference.settings import LogSettings

if TYPE_CHECKING:
    from lightning_app.inference.engine import InferenceEngine

logger = logging.getLogger(__name__)


class PredictionLog:
    """Builds and writes the records of one batch; owns the projection of the embedding."""

    def __init__(
        self,
        engine: InferenceEngine,
        model_name: str,
        *,
        settings: LogSettings | None = None,
        stream: IO[str] | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        """``settings`` default to logging every prediction; ``stream`` to stdout.

        ``on_failure`` is called once per write that failed (a closed or full stream): the
        failure is counted there (``model_log_failures_total``) and the request is answered.
        """
        self.settings = settings or LogSettings()
        self.model_name = model_name
        self.version = str(engine.version)
        self.projection = Projection.load(engine.model_dir)
        self.stream = stream
        self.on_failure = on_failure

    def predictions(
        self,
        requests: Sequence[Request],
        pixels: Any,
        answers: Sequence[Mapping[str, Any]],
        inference_ms: float,
        *,
        forward: Forward | None,
    ) -> list[dict[str, Any]]:
        """Records of a batch's answered requests (sampled), written out; never raises.

        ``forward`` is the pass that gave ``answers`` (its features become the embeddings;
        ``None``: records without one).
        """
        try:
            return self._predictions(requests, pixels, answers, inference_ms, forward)
        except Exception as exc:  # the log must never cost an answer
            self._failed(exc)
            return []

    def _predictions(
        self,
        requests: Sequence[Request],
        pixels: Any,
        answers: Sequence[Mapping[str, Any]],
        inference_ms: float,
        forward: Forward | None,
    ) -> list[dict[str, Any]]:
        keep = [i for i in range(len(requests)) if self.settings.keep()]
        if not keep:
            return []
        means, stds = intensity(pixels[list(keep)])
        embedded = embeddings(self.projection, forward, keep, len(pixels))
        records = [
            prediction_record(
                answer=answers[i],
                request_id=requests[i].request_id,
                model_name=self.model_name,
                facts=source_facts(requests[i].data),
                intensity_mean=means[j],
                intensity_std=stds[j],
                embedding=None if embedded is None else embedded[j],
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
                self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        logger.warning("prediction log failed: %s: %s", type(exc).__name__, exc)
        if self.on_failure is not None:
            self.on_failure()
