"""HTTP client of TorchServe: predictions, explanations, ``/ping`` and model metadata.

Every call has a timeout (a TorchServe whose handler fails to load hangs instead of
failing), and every failure becomes an :class:`InferenceError` whose message is one
sentence a user can read. The image bytes are sent as they are: preprocessing belongs to
the handler.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from lightning_app.ui import answer as parse
from lightning_app.ui.answer import Health, ModelInfo, Prediction
from lightning_app.ui.settings import Settings

__all__ = ["UNAVAILABLE", "Health", "InferenceError", "ModelInfo", "Prediction", "TorchServeClient"]

UNAVAILABLE = "Inference service unavailable"
_PROBE_TIMEOUT_S = 3.0


class InferenceError(Exception):
    """A failed call, with a message meant for the page."""


def _backend_message(response: httpx.Response) -> str:
    """Return the human part of an error body: TorchServe's ``message`` or the text itself."""
    try:
        body = response.json()
    except ValueError:
        return " ".join(response.text.split())[:200]
    if isinstance(body, dict):
        for key in ("message", "error", "detail"):
            if isinstance(body.get(key), str) and body[key].strip():
                return str(body[key]).strip()
    return " ".join(response.text.split())[:200]


class TorchServeClient:
    """Talks to one TorchServe model over REST; thread-safe (one pooled ``httpx.Client``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._http = httpx.Client(timeout=httpx.Timeout(settings.timeout, connect=min(settings.timeout, 5.0)))

    @property
    def predict_url(self) -> str:
        """``<INFERENCE_URL>/predictions/<MODEL_NAME>``."""
        return f"{self.settings.inference_url}/predictions/{self.settings.model_name}"

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    @property
    def explain_url(self) -> str:
        """``<INFERENCE_URL>/explanations/<MODEL_NAME>``."""
        return f"{self.settings.inference_url}/explanations/{self.settings.model_name}"

    def predict(self, data: bytes) -> Prediction:
        """Send the image bytes as they are; return the model's answer or raise :class:`InferenceError`."""
        return self._ask(self.predict_url, data)

    def explain(self, data: bytes) -> Prediction:
        """Like :meth:`predict`, through ``/explanations``: the answer carries the heatmap when served."""
        return self._ask(self.explain_url, data)

    def _ask(self, url: str, data: bytes) -> Prediction:
        if not data:
            raise InferenceError("The file is empty: upload a brain-MRI scan (JPEG or PNG).")
        start = time.perf_counter()
        response = self._send("POST", url, content=data, headers={"Content-Type": "application/octet-stream"})
        latency_ms = (time.perf_counter() - start) * 1000.0
        if response.status_code != 200:
            raise InferenceError(self._status_message(response))
        try:
            body = response.json()
        except ValueError:
            body = None
        probabilities = parse.probabilities(body)
        if not probabilities:
            raise InferenceError("The inference service answered, but not with class probabilities.")
        ranked = dict(sorted(probabilities.items(), key=lambda kv: kv[1], reverse=True))
        label = parse.field_of(body, "prediction", "label", "class")
        return Prediction(
            label=label if label in ranked else next(iter(ranked)),
            probabilities=ranked,
            model_name=parse.field_of(body, "model", "model_name", "modelName") or self.settings.model_name,
            model_version=parse.field_of(body, "version", "model_version", "modelVersion"),
            latency_ms=latency_ms,
            in_distribution=parse.in_distribution(body),
            decision=parse.decision(body),
            warning=parse.field_of(body, "warning"),
            heatmap=parse.heatmap(body),
        )

    def ping(self) -> Health:
        """TorchServe's ``/ping``; never raises (an unreachable server is reported unhealthy)."""
        try:
            response = self._http.get(f"{self.settings.inference_url}/ping", timeout=_PROBE_TIMEOUT_S)
        except httpx.HTTPError:
            return Health(False, "unreachable")
        try:
            status = str(response.json().get("status", "unknown"))
        except (ValueError, AttributeError):
            status = f"HTTP {response.status_code}"
        if response.status_code != 200 and status == "unknown":
            status = f"HTTP {response.status_code}: {_backend_message(response)}"
        return Health(response.status_code == 200 and status == "Healthy", status)

    def model_info(self) -> ModelInfo | None:
        """Describe the model from the management API, or ``None`` when it is not reachable."""
        if not self.settings.management_url:
            return None
        url = f"{self.settings.management_url}/models/{self.settings.model_name}"
        try:
            response = self._http.get(url, timeout=_PROBE_TIMEOUT_S)
            body = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        if (
            response.status_code != 200
            or not isinstance(body, list)
            or not body
            or not isinstance(body[0], dict)
        ):
            return None
        raw: dict[str, Any] = body[0]
        workers = raw.get("workers") or []
        ready = sum(1 for w in workers if isinstance(w, dict) and w.get("status") == "READY")
        version = raw.get("modelVersion")
        return ModelInfo(
            name=str(raw.get("modelName", self.settings.model_name)),
            version=None if version is None else str(version),
            workers_ready=ready,
            workers_total=len(workers),
            raw=raw,
        )

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, url, **kwargs)
        except httpx.TimeoutException:
            raise InferenceError(
                f"{UNAVAILABLE}: no answer from {self.settings.inference_url} "
                f"within {self.settings.timeout:g} s. Try again later."
            ) from None
        except httpx.ConnectError:
            raise InferenceError(
                f"{UNAVAILABLE}: cannot connect to {self.settings.inference_url} (is TorchServe running?)."
            ) from None
        except httpx.HTTPError as exc:
            raise InferenceError(
                f"{UNAVAILABLE}: connection to {self.settings.inference_url} broke ({type(exc).__name__})."
            ) from None

    def _status_message(self, response: httpx.Response) -> str:
        code, message = response.status_code, _backend_message(response)
        detail = f": {message}" if message else "."
        if code == 404:
            return (
                f"The model '{self.settings.model_name}' is not served at {self.settings.inference_url}"
                f" (HTTP 404{detail.rstrip('.')})."
            )
        if code == 503:
            return f"{UNAVAILABLE}: the model has no ready worker yet (HTTP 503). Try again in a few seconds."
        if code == 413:
            return f"The file is too large for the inference service (HTTP 413){detail}"
        if 400 <= code < 500:
            return f"The inference service rejected the file (HTTP {code}){detail}"
        return f"The inference service failed (HTTP {code}){detail}"
