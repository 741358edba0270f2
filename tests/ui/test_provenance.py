"""The page names the registry version it talks to (``REGISTRY``, ``REGISTRY_ALIAS``).

Real here: the registry's bucket in fake-gcs-server with the session's ``.mar`` published in
it, that archive served by a real LitServe on 127.0.0.1 (``lit_served_model``, Cloud Run's
setup: no management API), the page's HTTP client, and the page itself in Debian's chromium.
Nothing is faked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from lightning_app.cloud.deploy_model import mar_version
from lightning_app.cloud.registry import MAR, Registry
from lightning_app.data.sources import embedded_br35h
from lightning_app.ui.app import render_health, render_prediction
from lightning_app.ui.client import Health, TorchServeClient
from lightning_app.ui.provenance import Provenance, RegistryWatch
from lightning_app.ui.settings import Settings

from .conftest import running_page

pytestmark = pytest.mark.slow


class Clock:
    """A clock the test moves by hand (the watch re-reads the registry every ``ttl_s``)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def scan() -> bytes:
    """A real tumour scan of Br35H."""
    return sorted((embedded_br35h() / "yes").iterdir())[-1].read_bytes()


def page_settings(server: Any, root: str) -> Settings:
    """The page as Cloud Run runs it: no management API, the registry's production alias."""
    return Settings(
        inference_url=server.inference_url,
        management_url=None,
        model_name=server.model_name,
        timeout=30.0,
        registry=root,
    )


def test_answers_name_the_registry_version_and_a_moved_alias_is_noticed(
    gcs_bucket: str, mar_file: Path, lit_served_model: Any
) -> None:
    registry = Registry.at(f"{gcs_bucket}/registry/brain_mri")
    served = mar_version(mar_file)
    v1 = registry.publish({MAR: mar_file}, {"model_version": served})
    clock = Clock()
    watch = RegistryWatch(registry.root, "production", ttl_s=60, clock=clock)
    unset = watch.current()
    assert unset.problem == (
        f"alias production points at no version in {registry.root} yet: "
        "make promote VERSION=vN ALIAS=production"
    )
    registry.move_alias("production", v1, expected=registry.alias("production"))
    assert watch.current() == unset, "read at most once a minute"
    clock.now += 60
    assert watch.current() == Provenance("production", "v1", served)

    client = TorchServeClient(page_settings(lit_served_model, registry.root))
    try:
        prediction = client.explain(scan())
        health = client.ping()
    finally:
        client.close()
    assert prediction.model_version == served
    shown = render_prediction(prediction, watch.current())
    assert f"Serving registry v1 (production), model version {served}" in shown
    badge = render_health(health, None, page_settings(lit_served_model, registry.root), watch.current())
    assert f"registry v1 (production), model version {served}" in badge

    # production moves to a version whose archive is another model: the page says so
    v2 = registry.publish({MAR: mar_file}, {"model_version": "0000deadbeef"})
    registry.move_alias("production", v2, expected=registry.alias("production"))
    clock.now += 60
    shown = render_prediction(prediction, watch.current())
    assert (
        f"**Warning:** The served model version {served} is not registry v2 (production), "
        "which is model version 0000deadbeef"
    ) in shown


def test_an_unreadable_registry_is_shown_never_raised(gcs_bucket: str) -> None:
    watch = RegistryWatch("gs://no-such-bucket-here/registry/brain_mri", "staging", ttl_s=0)
    seen = watch.current()
    assert seen.version is None and seen.problem
    assert seen.describe("abc").startswith("registry staging: ")
    badge = render_health(Health(True, "Healthy"), None, Settings(), seen)
    assert "registry staging: " in badge


def test_the_page_shows_the_registry_version_it_talks_to(
    tab: Any, gcs_bucket: str, mar_file: Path, lit_served_model: Any, tmp_path: Path
) -> None:
    registry = Registry.at(f"{gcs_bucket}/registry/brain_mri")
    served = mar_version(mar_file)
    version = registry.publish({MAR: mar_file}, {"model_version": served})
    registry.move_alias("production", version, expected=registry.alias("production"))
    upload = tmp_path / "scan.jpg"
    upload.write_bytes(scan())
    with running_page(page_settings(lit_served_model, registry.root)) as url:
        tab.goto(url)
        expect(tab.locator("#health")).to_contain_text(
            f"registry {version} (production), model version {served}", timeout=60_000
        )
        tab.locator("#scan input[type=file]").set_input_files(str(upload))
        expect(tab.locator("#result")).to_contain_text(
            f"Serving registry {version} (production), model version {served}", timeout=60_000
        )
