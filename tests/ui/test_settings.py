"""Settings come from environment variables only, with documented defaults."""

from __future__ import annotations

import pytest

from lightning_app.ui.settings import Settings, SettingsError


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.inference_url == "http://127.0.0.1:8080"
    assert settings.management_url == "http://127.0.0.1:8081"
    assert (settings.model_name, settings.timeout) == ("brain_mri", 60.0)
    assert (settings.host, settings.port) == ("127.0.0.1", 7860)


def test_every_variable_is_read() -> None:
    env = {
        "INFERENCE_URL": "https://example.invalid/",
        "MANAGEMENT_URL": "",
        "MODEL_NAME": "other",
        "INFERENCE_TIMEOUT": "2.5",
        "UI_HOST": "0.0.0.0",
        "UI_PORT": "9000",
    }
    settings = Settings.from_env(env)
    assert settings.inference_url == "https://example.invalid"
    assert settings.management_url is None
    assert (settings.model_name, settings.timeout) == ("other", 2.5)
    assert (settings.host, settings.port) == ("0.0.0.0", 9000)


def test_cloud_run_port_listens_on_all_interfaces() -> None:
    settings = Settings.from_env({"PORT": "8080", "UI_PORT": "9000"})
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INFERENCE_URL": "localhost:8080"}, "INFERENCE_URL must be an http"),
        ({"MANAGEMENT_URL": "ftp://x"}, "MANAGEMENT_URL must be an http"),
        ({"MODEL_NAME": "a/b"}, "MODEL_NAME must be a plain model name"),
        ({"INFERENCE_TIMEOUT": "soon"}, "INFERENCE_TIMEOUT must be a number"),
        ({"INFERENCE_TIMEOUT": "0"}, "INFERENCE_TIMEOUT must be positive"),
        ({"UI_PORT": "http"}, "UI_PORT='http': expected a whole number from 1 to 65535"),
        ({"PORT": "70000"}, "^PORT='70000': expected a whole number from 1 to 65535"),
        ({"UI_PORT": "0"}, "UI_PORT='0': expected a whole number from 1 to 65535"),
    ],
)
def test_bad_values_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_the_registry_the_page_names_is_read_and_checked() -> None:
    assert (Settings.from_env({}).registry, Settings.from_env({}).registry_alias) == (None, "production")
    settings = Settings.from_env({"REGISTRY": "gs://b/registry/brain_mri/", "REGISTRY_ALIAS": "staging"})
    assert (settings.registry, settings.registry_alias) == ("gs://b/registry/brain_mri", "staging")
    with pytest.raises(SettingsError, match=r"^REGISTRY: not a Cloud Storage URI"):
        Settings.from_env({"REGISTRY": "/srv/registry"})
    with pytest.raises(SettingsError, match=r"^REGISTRY_ALIAS: unknown alias 'latest'"):
        Settings.from_env({"REGISTRY": "gs://b/r", "REGISTRY_ALIAS": "latest"})
