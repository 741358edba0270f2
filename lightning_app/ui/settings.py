"""The page's configuration, read from environment variables only.

| variable            | default                  | meaning                                             |
|---------------------|--------------------------|-----------------------------------------------------|
| ``INFERENCE_URL``   | ``http://127.0.0.1:8080`` | TorchServe inference API                           |
| ``MANAGEMENT_URL``  | ``http://127.0.0.1:8081`` | TorchServe management API; empty string turns it off |
| ``MODEL_NAME``      | ``brain_mri``            | model name in ``/predictions/<name>``               |
| ``INFERENCE_TIMEOUT`` | ``60``                 | seconds a prediction may take (a cold start: see below) |
| ``UI_HOST``         | ``127.0.0.1`` (``0.0.0.0`` when ``PORT`` is set) | address the page listens on |
| ``UI_PORT``         | ``7860``                 | port the page listens on                            |
| ``PORT``            | unset                    | Cloud Run's port: when set, the page listens on it  |
| ``REGISTRY``        | unset (off)              | ``gs://.../registry/brain_mri``: name its version  |
| ``REGISTRY_ALIAS``  | ``production``           | the registry alias the served model should be       |

``make deploy-model`` sets ``REGISTRY`` and ``REGISTRY_ALIAS`` on the deployed page.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from lightning_app.errors import SettingsError as SettingsError  # re-exported: launch catches it
from lightning_app.errors import UserError, whole_number

DEFAULT_INFERENCE_URL = "http://127.0.0.1:8080"
DEFAULT_MANAGEMENT_URL = "http://127.0.0.1:8081"
DEFAULT_MODEL_NAME = "brain_mri"
#: A cold serving instance (JVM + model load, ~10 s here) may take up to its Cloud Run startup
#: probe's 60 s (cloudbuild.yaml) before it answers: the page waits that long.
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_UI_PORT = 7860
DEFAULT_REGISTRY_ALIAS = "production"

ENV_HELP = """environment variables (the only configuration):
  INFERENCE_URL      TorchServe inference API (default http://127.0.0.1:8080)
  MANAGEMENT_URL     TorchServe management API, '' to turn off (default http://127.0.0.1:8081)
  MODEL_NAME         served model name (default brain_mri)
  INFERENCE_TIMEOUT  seconds before a prediction gives up (default 60: a cold start)
  UI_HOST, UI_PORT   where the page listens (default 127.0.0.1:7860)
  PORT               Cloud Run: listen on 0.0.0.0:$PORT when set
  REGISTRY           gs://.../registry/brain_mri: name the registry version served (default: off)
  REGISTRY_ALIAS     the registry alias the served model should be (default production)"""


def _url(name: str, value: str) -> str:
    value = value.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise SettingsError(f"{name} must be an http:// or https:// URL, got {value!r}")
    return value


def _port(env: Mapping[str, str], name: str) -> int:
    return whole_number(env, name, minimum=1, maximum=65535) or DEFAULT_UI_PORT


def _registry(env: Mapping[str, str]) -> tuple[str | None, str]:
    root = (env.get("REGISTRY") or "").strip().rstrip("/")
    alias = (env.get("REGISTRY_ALIAS") or DEFAULT_REGISTRY_ALIAS).strip()
    if not root:
        return None, alias
    from lightning_app.cloud.registry import Registry, check_alias  # only with a registry to read

    try:
        root = Registry.at(root).root
    except UserError as exc:
        raise SettingsError(f"REGISTRY: {exc}") from None
    try:
        return root, check_alias(alias)
    except UserError as exc:
        raise SettingsError(f"REGISTRY_ALIAS: {exc}") from None


@dataclass(frozen=True)
class Settings:
    """Where TorchServe is, which model to ask, and where the page listens."""

    inference_url: str = DEFAULT_INFERENCE_URL
    management_url: str | None = DEFAULT_MANAGEMENT_URL
    model_name: str = DEFAULT_MODEL_NAME
    timeout: float = DEFAULT_TIMEOUT_S
    host: str = "127.0.0.1"
    port: int = DEFAULT_UI_PORT
    registry: str | None = None
    registry_alias: str = DEFAULT_REGISTRY_ALIAS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``env`` (default ``os.environ``); raise :class:`SettingsError`."""
        env = os.environ if env is None else env
        inference = _url("INFERENCE_URL", env.get("INFERENCE_URL") or DEFAULT_INFERENCE_URL)
        raw_management = env.get("MANAGEMENT_URL", DEFAULT_MANAGEMENT_URL)
        management = _url("MANAGEMENT_URL", raw_management) if raw_management.strip() else None
        model = (env.get("MODEL_NAME") or DEFAULT_MODEL_NAME).strip()
        if not model or "/" in model:
            raise SettingsError(f"MODEL_NAME must be a plain model name, got {model!r}")
        raw_timeout = env.get("INFERENCE_TIMEOUT") or str(DEFAULT_TIMEOUT_S)
        try:
            timeout = float(raw_timeout)
        except ValueError:
            raise SettingsError(
                f"INFERENCE_TIMEOUT must be a number of seconds, got {raw_timeout!r}"
            ) from None
        if not timeout > 0:
            raise SettingsError(f"INFERENCE_TIMEOUT must be positive, got {raw_timeout!r}")
        if env.get("PORT", "").strip():
            host, port = env.get("UI_HOST") or "0.0.0.0", _port(env, "PORT")
        else:
            host = env.get("UI_HOST") or "127.0.0.1"
            port = _port(env, "UI_PORT")
        registry, alias = _registry(env)
        return cls(inference, management, model, timeout, host, port, registry, alias)
