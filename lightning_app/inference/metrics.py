"""Model metrics for TorchServe's Prometheus endpoint (``/metrics`` on the metrics port).

The handler reports through TorchServe's metrics cache (``context.metrics``); each
metric must be declared, with its dimensions, in ``serve/metrics.yaml`` (the frontend
registers them from there; ``metrics_mode=prometheus`` in ``config.properties``).
TorchServe adds a ``Hostname`` label itself. Histograms use the Prometheus client's
default buckets (5 ms ... 10 s), which is why confidence is reported as its complement:
``model_prediction_uncertainty = 1 - top probability`` puts bucket edges at confidence
0.995, 0.99, 0.975, 0.95, 0.9, 0.75 and 0.5.

Reporting never fails a request: a metric the cache does not know is skipped (logged
once).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

#: name -> (TorchServe metric type, dimension names); mirrored in serve/metrics.yaml.
METRICS: dict[str, tuple[str, list[str]]] = {
    "model_predictions_total": ("counter", ["ModelName", "Class"]),
    "model_out_of_distribution_total": ("counter", ["ModelName"]),
    "model_bad_requests_total": ("counter", ["ModelName", "Status", "ErrorType"]),
    "model_log_failures_total": ("counter", ["ModelName"]),
    "model_cascade_deferred_total": ("counter", ["ModelName"]),
    "model_prediction_uncertainty": ("histogram", ["ModelName"]),
    "model_decode_seconds": ("histogram", ["ModelName"]),
    "model_inference_seconds": ("histogram", ["ModelName"]),
}


class ModelMetrics:
    """Reports the model metrics through a TorchServe metrics cache (or nowhere if ``None``)."""

    def __init__(self, cache: Any, model_name: str) -> None:
        self.model_name = model_name
        self._metrics: dict[str, Any] = {}
        if cache is None:
            return
        try:
            from ts.metrics.metric_type_enum import MetricTypes
        except ImportError:  # outside TorchServe
            return
        for name, (kind, _dims) in METRICS.items():
            try:
                self._metrics[name] = cache.get_metric(name, MetricTypes(kind))
            except Exception as exc:  # not declared in the metrics config: report the rest
                logger.warning("metric %s is not declared in the metrics config: %s", name, exc)

    def _add(self, name: str, value: float, *dims: str, request_id: str = "") -> None:
        metric = self._metrics.get(name)
        if metric is not None:
            metric.add_or_update(value, [self.model_name, *dims], request_id or "")

    def prediction(self, answer: Mapping[str, Any], request_id: str | None = None) -> None:
        """Count one answer by class, observe its uncertainty, count it if out of distribution."""
        predicted = str(answer["prediction"])
        confidence = max(float(p["probability"]) for p in answer["probabilities"])
        self._add("model_predictions_total", 1, predicted, request_id=request_id or "")
        self._add("model_prediction_uncertainty", max(0.0, 1.0 - confidence), request_id=request_id or "")
        ood = answer.get("in_distribution")
        if isinstance(ood, Mapping) and ood.get("ok") is False:
            self._add("model_out_of_distribution_total", 1, request_id=request_id or "")

    def bad_request(self, status: int, error_type: str) -> None:
        """Count a refused request by status and error type."""
        self._add("model_bad_requests_total", 1, str(status), error_type)

    def log_failure(self) -> None:
        """Count one write of the prediction log that failed (the answers went out anyway)."""
        self._add("model_log_failures_total", 1)

    def deferred(self, count: int) -> None:
        """Count scans a cascade sent on to the ensemble's other members (its share: over predictions)."""
        if count > 0:
            self._add("model_cascade_deferred_total", count)

    def decode(self, seconds: float) -> None:
        """Observe one request's decode time."""
        self._add("model_decode_seconds", seconds)

    def inference(self, seconds: float) -> None:
        """Observe one batch's forward time."""
        self._add("model_inference_seconds", seconds)
