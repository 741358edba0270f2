"""Prometheus model metrics for the LitServe runtime, named as TorchServe exports them.

:class:`~lightning_app.inference.metrics.ModelMetrics` reports through a TorchServe-style
metrics cache (``get_metric(name, kind)`` -> an object with ``add_or_update(value,
dimensions, request_id)``). :class:`PrometheusCache` is that cache over
``prometheus_client``, so the shared serving core reports the same metric names and labels
(the dimensions, ``ModelName`` first, of :data:`~lightning_app.inference.metrics.METRICS`) in
both runtimes.

LitServe answers from separate inference worker processes, so the metrics use
``prometheus_client``'s multiprocess mode: every process writes to the folder named by
``PROMETHEUS_MULTIPROC_DIR`` (set by :func:`serve.litserve_app.main` before any worker
starts) and :func:`serve_metrics` sums them on ``GET /metrics`` of a loopback port, as
TorchServe's metrics API does.
"""

from __future__ import annotations

from typing import Any

from lightning_app.inference.metrics import METRICS


class PrometheusMetric:
    """One metric of :data:`METRICS` as a Prometheus counter or histogram."""

    def __init__(self, name: str, kind: str, dimensions: list[str], registry: Any = None) -> None:
        from prometheus_client import REGISTRY, Counter, Histogram

        doc, where = f"{name} (lightning_app.inference.metrics)", REGISTRY if registry is None else registry
        self.metric: Any = (
            Counter(name, doc, dimensions, registry=where)
            if kind == "counter"
            else Histogram(name, doc, dimensions, registry=where)
        )
        self.is_counter = kind == "counter"

    def add_or_update(self, value: float, dimension_values: list[str], request_id: str = "") -> None:
        """Add ``value`` to the counter, or observe it in the histogram (``request_id`` unused)."""
        child = self.metric.labels(*dimension_values)
        if self.is_counter:
            child.inc(value)
        else:
            child.observe(value)


class PrometheusCache:
    """A TorchServe-style metrics cache for :class:`ModelMetrics`, backed by ``prometheus_client``."""

    def __init__(self, registry: Any = None) -> None:
        """Register every metric of :data:`METRICS` in ``registry`` (default: the process's own)."""
        self.metrics = {
            name: PrometheusMetric(name, kind, dims, registry) for name, (kind, dims) in METRICS.items()
        }

    def get_metric(self, name: str, kind: Any = None) -> PrometheusMetric:
        """The metric ``name`` (declared in :data:`METRICS`; ``kind`` is implied by it)."""
        return self.metrics[name]


def serve_metrics(port: int, multiproc_dir: str) -> None:
    """Serve ``GET /metrics`` on ``127.0.0.1:port``, summed over the processes writing ``multiproc_dir``."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=multiproc_dir)
    start_http_server(port, addr="127.0.0.1", registry=registry)
