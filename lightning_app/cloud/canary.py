"""Probe a serving URL and decide: the golden set's answers, then a short load.

:func:`probe` POSTs every golden scan to ``<url>/predictions/brain_mri`` and compares each
answer with the one recorded at register time (:func:`~lightning_app.cloud.golden.compare`),
then sends ``requests`` more predictions from ``concurrency`` threads, cycling the scans, and
measures errors and the 95th-percentile latency. :meth:`Limits.problems` turns a
:class:`Probe` into the reasons to refuse (empty: go on). The promotion's golden gate and each
step of the Cloud Run canary (:mod:`lightning_app.cloud.rollout`) use the same probe.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from lightning_app.cloud.golden import compare
from lightning_app.cloud.settings import CloudSettings, CloudSettingsError
from lightning_app.inference.artefacts import MODEL_NAME


@dataclass(frozen=True)
class Limits:
    """What a probed server must meet (``CANARY_*`` settings, defaults in brackets)."""

    max_error_rate: float = 0.0  # CANARY_MAX_ERROR_RATE [0]
    max_p95_ms: float = 2000.0  # CANARY_MAX_P95_MS [2000]
    min_agreement: float = 1.0  # CANARY_MIN_AGREEMENT [1.0]
    tolerance: float = 1e-3  # CANARY_PROB_TOLERANCE [0.001]: probability drift still "the same answer"
    requests: int = 40  # CANARY_REQUESTS [40]: the short load after the golden set
    concurrency: int = 4  # CANARY_CONCURRENCY [4]
    timeout_s: float = 30.0  # CANARY_TIMEOUT_S [30]: one request

    @classmethod
    def from_settings(cls, settings: CloudSettings) -> Limits:
        """The limits, each from its ``CANARY_*`` setting when set."""
        names = {
            "max_error_rate": "CANARY_MAX_ERROR_RATE",
            "max_p95_ms": "CANARY_MAX_P95_MS",
            "min_agreement": "CANARY_MIN_AGREEMENT",
            "tolerance": "CANARY_PROB_TOLERANCE",
            "requests": "CANARY_REQUESTS",
            "concurrency": "CANARY_CONCURRENCY",
            "timeout_s": "CANARY_TIMEOUT_S",
        }
        values: dict[str, Any] = {}
        for key, env in names.items():
            raw = settings.get(env)
            if raw:
                kind = type(getattr(cls(), key))
                try:
                    values[key] = kind(raw)
                except ValueError:
                    raise CloudSettingsError(f"{env}={raw!r} is not a {kind.__name__}") from None
        return cls(**values)

    def problems(self, probe: Probe) -> list[str]:
        """Why ``probe`` fails these limits, in words (empty: it passes)."""
        out = []
        if probe.error_rate > self.max_error_rate:
            out.append(f"errors {probe.errors}/{probe.requests} ({probe.error_rate:.1%})")
        if probe.agreement < self.min_agreement:
            first = ", ".join(f"{k}: {v}" for k, v in list(probe.mismatches.items())[:2])
            out.append(f"golden agreement {probe.agreement:.1%} < {self.min_agreement:.1%} ({first})")
        if probe.latencies_ms and probe.p95_ms > self.max_p95_ms:  # no answer at all: the errors say it
            out.append(f"p95 {probe.p95_ms:.0f} ms > {self.max_p95_ms:.0f} ms")
        return out


@dataclass
class Probe:
    """What one probe saw: requests, errors, latency, golden agreement."""

    requests: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    golden: int = 0
    mismatches: dict[str, str] = field(default_factory=dict)

    @property
    def error_rate(self) -> float:
        """Errors (non-200, no answer) per request."""
        return self.errors / self.requests if self.requests else 1.0

    @property
    def agreement(self) -> float:
        """Share of golden scans answered as recorded."""
        return (self.golden - len(self.mismatches)) / self.golden if self.golden else 0.0

    @property
    def p95_ms(self) -> float:
        """95th-percentile latency of the answered requests (nearest rank)."""
        if not self.latencies_ms:
            return float("inf")
        ranked = sorted(self.latencies_ms)
        return ranked[min(len(ranked) - 1, int(0.95 * len(ranked)))]

    def summary(self) -> str:
        """One line for the log."""
        return (
            f"{self.requests} requests, {self.errors} errors, p95 {self.p95_ms:.0f} ms, "
            f"golden {self.golden - len(self.mismatches)}/{self.golden}"
        )


def predict(url: str, data: bytes, timeout: float) -> dict[str, Any]:
    """POST one scan to ``<url>/predictions/brain_mri``; the JSON answer (raises on non-200)."""
    request = urllib.request.Request(
        f"{url.rstrip('/')}/predictions/{MODEL_NAME}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return dict(json.loads(response.read()))


def probe(
    url: str,
    scans: Mapping[str, bytes],
    expected: Mapping[str, dict[str, Any]],
    limits: Limits,
) -> Probe:
    """The golden set (compared with ``expected``), then ``limits.requests`` under load."""
    result = Probe()

    def one(name: str) -> tuple[str, dict[str, Any] | None, float]:
        start = time.perf_counter()
        try:
            answer: dict[str, Any] | None = predict(url, scans[name], limits.timeout_s)
        except (OSError, ValueError):  # refused, timed out, HTTP error, not JSON
            answer = None
        return name, answer, 1000 * (time.perf_counter() - start)

    names = sorted(scans)
    load = [names[i % len(names)] for i in range(limits.requests)]
    with ThreadPoolExecutor(max_workers=max(1, limits.concurrency)) as pool:
        golden = [one(name) for name in names]  # one at a time: the answers, not the load
        answered = golden + list(pool.map(one, load))
    for _, answer, ms in answered:
        result.requests += 1
        if answer is None:
            result.errors += 1
        else:
            result.latencies_ms.append(ms)
    for name, answer, _ in golden:
        result.golden += 1
        why = "no answer" if answer is None else compare(expected[name], answer, limits.tolerance)
        if why:
            result.mismatches[name] = why
    return result
