"""The page in a real browser (Debian chromium via Playwright) against a real TorchServe.

The model is the smoke model trained on real Br35H scans in this session (``served_model``
from tests/conftest.py); the page is the real Gradio server on a free 127.0.0.1 port.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from lightning_app.ui.app import example_scans
from lightning_app.ui.client import UNAVAILABLE
from lightning_app.ui.settings import Settings
from tests.conftest import free_port

from .conftest import running_page

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "reports" / "ui.png"
WAIT_MS = 60_000  # a prediction on 2 busy cores; every wait in these tests is bounded


def tumour_scan() -> Path:
    """A real tumour scan from Br35H that the session's small model was not trained on."""
    from lightning_app.data.sources import embedded_br35h

    return sorted((embedded_br35h() / "yes").iterdir())[-1]


def direct_answer(predict_url: str, path: Path) -> dict[str, Any]:
    """TorchServe's own answer for ``path``, asked without the page."""
    request = urllib.request.Request(predict_url, data=path.read_bytes(), method="POST")
    request.add_header("Content-Type", "application/octet-stream")
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


def upload(tab: Any, path: Path) -> None:
    """Put ``path`` in the upload box, first clearing a file already there (as a user would)."""
    clear = tab.locator('#scan button[aria-label="Clear"]')
    if clear.count():
        clear.click()
    tab.locator("#scan input[type=file]").set_input_files(str(path))


def shown_probabilities(tab: Any) -> dict[str, float]:
    """The class -> probability table of the result box."""
    cells = tab.locator("#result table tbody tr").all()
    rows = [row.locator("td").all_inner_texts() for row in cells]
    return {name.strip(): float(p) for name, p in rows}


def expect_text(tab: Any, selector: str, text: str, timeout_ms: int = WAIT_MS) -> None:
    expect(tab.locator(selector)).to_contain_text(text, timeout=timeout_ms)


@pytest.fixture(scope="module")
def page_url(served_model: Any) -> Iterator[str]:
    settings = Settings(
        inference_url=served_model.inference_url,
        management_url=served_model.management_url,
        model_name=served_model.model_name,
        timeout=30.0,
    )
    with running_page(settings) as url:
        yield url


def test_uploading_a_tumour_scan_shows_the_models_answer(tab: Any, page_url: str, served_model: Any) -> None:
    scan = tumour_scan()
    expected = direct_answer(served_model.predict_url, scan)
    tab.goto(page_url)
    expect_text(tab, "#health", "TorchServe healthy")
    expect_text(tab, "#health", "workers ready")
    # management API reachable: metadata shown (the same update as the badge; the DOM may lag it)
    expect(tab.locator("#model-meta")).to_be_visible(timeout=WAIT_MS)
    upload(tab, scan)
    expect_text(tab, "#result", "Prediction:")
    shown = shown_probabilities(tab)
    classes = {item["label"]: item["probability"] for item in expected["probabilities"]}
    assert set(shown) == set(classes), "every class of the model, by its name"
    assert sum(shown.values()) == pytest.approx(1.0, abs=1e-3)
    for name, probability in classes.items():
        assert shown[name] == pytest.approx(probability, abs=1e-4)
    assert tab.locator("#result h3").inner_text() == f"Prediction: {expected['prediction']}"
    assert expected["version"] in tab.locator("#result").inner_text()
    expect_text(tab, "#probabilities", expected["prediction"])
    SCREENSHOT.parent.mkdir(exist_ok=True)
    tab.screenshot(path=str(SCREENSHOT), full_page=True)


def test_clicking_a_bundled_example_shows_a_prediction(tab: Any, page_url: str, served_model: Any) -> None:
    example = example_scans()[-1]
    expected = direct_answer(served_model.predict_url, example)
    tab.goto(page_url)
    tab.locator("#examples img").nth(len(example_scans()) - 1).click()
    expect_text(tab, "#result", f"Prediction: {expected['prediction']}")
    assert sum(shown_probabilities(tab).values()) == pytest.approx(1.0, abs=1e-3)


def test_a_non_image_gets_a_readable_error_and_the_next_upload_works(
    tab: Any, page_url: str, tmp_path: Path
) -> None:
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("these are notes, not a brain scan\n" * 20)
    tab.goto(page_url)
    upload(tab, not_an_image)
    expect_text(tab, "#result", "Could not classify the scan")
    message = tab.locator("#result").inner_text()
    assert "rejected the file (HTTP 400)" in message
    assert "Traceback" not in message
    assert tab.locator("#result table").count() == 0
    upload(tab, example_scans()[0])
    expect_text(tab, "#result", "Prediction:")
    assert sum(shown_probabilities(tab).values()) == pytest.approx(1.0, abs=1e-3)


def test_torchserve_stopped_shows_service_unavailable(tab: Any, mar_file: Path, tmp_path: Path) -> None:
    """Uses its own TorchServe, stopped mid-test, so the shared one keeps serving."""
    from serve.launcher import start_torchserve

    ports = {"inference_port": free_port(), "management_port": free_port(), "metrics_port": free_port()}
    own = start_torchserve(mar_file, tmp_path / "ts", timeout=180, **ports)
    timeout_s = 5.0
    try:
        settings = Settings(
            inference_url=own.inference_url, management_url=own.management_url, timeout=timeout_s
        )
        with running_page(settings) as url:
            tab.goto(url)
            upload(tab, example_scans()[0])
            expect_text(tab, "#result", "Prediction:")
            own.stop()
            upload(tab, example_scans()[1])
            expect_text(tab, "#result", UNAVAILABLE, timeout_ms=int((timeout_s + 10) * 1000))
            assert "Traceback" not in tab.locator("#result").inner_text()
            tab.locator("#check").click()
            expect_text(tab, "#health", "not healthy", timeout_ms=15_000)
            expect(tab.locator("#model-meta")).to_be_hidden(timeout=15_000)
    finally:
        own.stop()
        shutil.rmtree(tmp_path / "ts", ignore_errors=True)


def test_no_backend_at_all_is_reported_on_load(tab: Any) -> None:
    """The page starts and explains itself even when nothing listens at INFERENCE_URL."""
    closed = f"http://127.0.0.1:{free_port()}"
    with running_page(Settings(inference_url=closed, management_url=closed, timeout=5.0)) as url:
        tab.goto(url)
        expect_text(tab, "#health", "not healthy (unreachable)", timeout_ms=15_000)
        assert not tab.locator("#model-meta").is_visible()
        tab.locator("#examples img").first.click()
        expect_text(tab, "#result", f"{UNAVAILABLE}: cannot connect to {closed}", timeout_ms=15_000)


def shown_picture(tab: Any) -> np.ndarray:
    """The pixels of the picture the page shows (fetched by the browser from the page's own URL)."""
    src = tab.locator("#preview img").get_attribute("src")
    assert src, "no picture shown"
    inline = src.startswith("data:")
    data = base64.b64decode(src.split(",", 1)[1]) if inline else tab.request.get(src).body()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def colourfulness(picture: np.ndarray) -> float:
    """Mean spread between the colour channels: 0 for a gray picture."""
    return float((picture.max(axis=2) - picture.min(axis=2)).mean())


def test_the_heatmap_overlay_toggles_and_fades(tab: Any, page_url: str) -> None:
    tab.goto(page_url)
    upload(tab, tumour_scan())
    expect_text(tab, "#result", "Heatmap:")
    expect(tab.locator("#preview img")).to_be_visible(timeout=WAIT_MS)
    with_heatmap = shown_picture(tab)
    assert colourfulness(with_heatmap) > 5, "the heatmap is drawn in colour over the gray scan"
    tab.locator("#show-heatmap input[type=checkbox]").uncheck()
    tab.wait_for_function(
        "src => document.querySelector('#preview img')?.getAttribute('src') !== src",
        arg=tab.locator("#preview img").get_attribute("src"),
        timeout=WAIT_MS,
    )
    plain = shown_picture(tab)
    assert plain.shape == with_heatmap.shape
    assert colourfulness(plain) == 0.0, "toggled off: the scan alone, in gray"
    assert not tab.locator("#ood-warning").is_visible()


def test_a_flagged_image_gets_the_warning_banner_and_a_scan_clears_it(
    tab: Any, page_url: str, served_model: Any, tmp_path: Path
) -> None:
    """A real non-MRI image (shipped in a PyPI package) that the server flags shows the banner.

    The session's model is the small smoke model: the image is the first of a few real photos
    and documents that TorchServe itself flags (asked directly), so the test checks the page,
    not the guard's quality (docs/benchmarks.md measures that).
    """
    from benchmarks.ood_sets import read

    candidates = ["page.png", "chelsea.png", "coffee.png", "ihc.png", "astronaut.png", "text.png"]
    flagged = None
    for name in candidates:
        path = tmp_path / name
        path.write_bytes(read("skimage", f"data/{name}"))
        if not direct_answer(served_model.predict_url, path)["in_distribution"]["ok"]:
            flagged = path
            break
    assert flagged is not None, "the server flagged none of the candidate non-MRI images"
    tab.goto(page_url)
    upload(tab, flagged)
    expect_text(tab, "#ood-warning", "does not look like the brain MRIs", timeout_ms=WAIT_MS)
    expect_text(tab, "#result", "unlike the training scans")
    assert sum(shown_probabilities(tab).values()) == pytest.approx(1.0, abs=1e-3), "probabilities still shown"
    upload(tab, example_scans()[0])
    expect(tab.locator("#ood-warning")).to_be_hidden(timeout=WAIT_MS)
    expect(tab.locator("#result")).not_to_contain_text("unlike", timeout=WAIT_MS)
    expect_text(tab, "#result", "like the training scans")
