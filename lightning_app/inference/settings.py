"""Serving settings: the ONE reader of the serving environment variables.

The TorchServe handler calls :meth:`ServeSettings.from_env` once, when it initialises, and
passes the values down as arguments (engine, backends, threads, prediction log); nothing
else under :mod:`lightning_app.inference` reads ``os.environ``. Every variable, its default
and what it does:

* ``SERVE_MAX_IMAGE_BYTES`` [``8388608``, 8 MiB]: the largest accepted upload; a bigger one
  is answered 413.
* ``SERVE_TORCH_THREADS`` [unset: the cores shared out among the workers]: intra-op threads
  per worker, for torch and ONNX Runtime (``0``: the libraries' own default).
* ``SERVE_PRECISION`` [unset: the export's choice, ``model_meta.json`` ``backend.precision``]:
  ``fp32``, ``onnx-fp32`` or ``int8``.
* ``SERVE_MAX_CONCURRENCY`` [``32``]: LitServe only: model requests in progress at once
  (queued or in a batch); the next are answered at once with 503, a JSON body and
  ``Retry-After`` (``0``: no limit). TorchServe's own limit is ``job_queue_size`` in
  ``serve/config.properties`` (the same 32). Cloud Run's ``--concurrency`` (16, cloudbuild.yaml)
  stays below it, so Cloud Run queues or scales out before an instance refuses.
* ``SERVE_HEATMAP`` [``auto``]: the ``/explanations`` heatmap method: ``cam`` (the backbone's
  class activation map, from the served pass: torch-free on ONNX backends), ``layer-cam``
  (LayerCAM on the stage before, 8x8 cells at 128 px on a ResNet), ``gradient-input``
  (gradient x input on the pixels), both needing torch (a backward pass), or ``occlusion``
  (8x8 patches blacked out in turn, 65 forward passes of the served backend: torch-free). ``auto``:
  :data:`~lightning_app.inference.taps.EAGER_DEFAULT` on the eager fp32 backend, ``cam`` on
  ONNX ones. ``make bench-localise`` compares them (docs/benchmarks.md).
* ``PREDLOG_ENABLED`` [``1``]: ``0``/``false``/``no``/``off`` turns the prediction log off
  (bad requests included).
* ``PREDLOG_SAMPLE`` [``1.0``]: the fraction of answered predictions logged (bad requests:
  always).

An unusable ``SERVE_*`` value is a :class:`SettingsError` with one line naming the variable
(the worker does not load). The prediction log's two variables never stop serving: an
unreadable ``PREDLOG_SAMPLE`` falls back to ``1.0`` and one out of range is clamped to
``[0, 1]``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from lightning_app.errors import SettingsError as SettingsError  # re-exported: the handler's error
from lightning_app.errors import whole_number
from lightning_app.inference.backends import PRECISIONS
from lightning_app.inference.taps import HEATMAP_METHODS
from lightning_app.inference.threads import threads_per_worker

#: ``SERVE_MAX_IMAGE_BYTES``'s default; TorchServe's own ``max_request_size`` in
#: ``serve/config.properties`` refuses bigger requests before they reach the handler.
MAX_IMAGE_BYTES = 8 * 2**20
#: ``SERVE_MAX_CONCURRENCY``'s default (TorchServe: ``job_queue_size`` in ``serve/config.properties``).
MAX_CONCURRENCY = 32


@dataclass(frozen=True)
class LogSettings:
    """Whether and how often the prediction log writes (``PREDLOG_ENABLED``, ``PREDLOG_SAMPLE``)."""

    enabled: bool = True
    sample: float = 1.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LogSettings:
        """Read ``PREDLOG_ENABLED`` and ``PREDLOG_SAMPLE``; bad values fall back to the defaults."""
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


@dataclass(frozen=True)
class ServeSettings:
    """Every serving setting (see the module docstring for the variables and defaults)."""

    #: ``SERVE_MAX_IMAGE_BYTES``: largest accepted upload in bytes.
    max_image_bytes: int = MAX_IMAGE_BYTES
    #: ``SERVE_TORCH_THREADS``: intra-op threads per worker (``None``: shared out, see :meth:`threads`).
    torch_threads: int | None = None
    #: ``SERVE_PRECISION``: the backend to serve (``None``: the export's choice).
    precision: str | None = None
    #: ``SERVE_MAX_CONCURRENCY``: model requests in progress before 503 (LitServe; ``0``: no limit).
    max_concurrency: int = MAX_CONCURRENCY
    #: ``SERVE_HEATMAP``: the heatmap method (``None``: ``auto``, the backend's default).
    heatmap: str | None = None
    #: ``PREDLOG_ENABLED`` and ``PREDLOG_SAMPLE``.
    log: LogSettings = field(default_factory=LogSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServeSettings:
        """Read the variables from ``env`` (default ``os.environ``); raise :class:`SettingsError`."""
        env = os.environ if env is None else env
        precision = env.get("SERVE_PRECISION", "").strip() or None
        if precision is not None and precision not in PRECISIONS:
            raise SettingsError(
                f"SERVE_PRECISION={precision!r}: unknown precision, expected one of {', '.join(PRECISIONS)}"
            )
        heatmap = env.get("SERVE_HEATMAP", "").strip().lower() or "auto"
        if heatmap not in ("auto", *HEATMAP_METHODS):
            raise SettingsError(
                f"SERVE_HEATMAP={heatmap!r}: unknown heatmap method, "
                f"expected auto, {', '.join(HEATMAP_METHODS)}"
            )
        max_bytes = whole_number(env, "SERVE_MAX_IMAGE_BYTES", minimum=1)
        concurrency = whole_number(env, "SERVE_MAX_CONCURRENCY", minimum=0)
        return cls(
            max_image_bytes=MAX_IMAGE_BYTES if max_bytes is None else max_bytes,
            torch_threads=whole_number(env, "SERVE_TORCH_THREADS", minimum=0),
            precision=precision,
            max_concurrency=MAX_CONCURRENCY if concurrency is None else concurrency,
            heatmap=None if heatmap == "auto" else heatmap,
            log=LogSettings.from_env(env),
        )

    def threads(self, workers: int) -> int:
        """Intra-op threads for one of ``workers`` serving processes (:func:`threads_per_worker`)."""
        return threads_per_worker(workers, self.torch_threads)
