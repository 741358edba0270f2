"""The page's process boundaries, its rendering, and its bundled examples (no browser)."""

from __future__ import annotations

import csv
import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_app.ui.answer import Decision, Heatmap
from lightning_app.ui.app import (
    EXAMPLES_DIR,
    example_caption,
    example_scans,
    render_error,
    render_health,
    render_prediction,
)
from lightning_app.ui.client import Health, ModelInfo, Prediction
from lightning_app.ui.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CLASS_OF_FOLDER = {"no": "no_tumor", "yes": "tumor"}  # configs/default.yaml's class_map


def run_python(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_page_imports_neither_torch_nor_model_code() -> None:
    code = (
        "import sys, lightning_app.ui.app, lightning_app.ui.demo\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'lightning')"
        " or m.startswith(('lightning_app.models', 'lightning_app.data', 'lightning_app.transforms')))\n"
        "assert not bad, bad\n"
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr


def test_help_lists_the_environment_and_does_not_import_gradio() -> None:
    result = run_python("-m", "lightning_app.ui", "--help")
    assert result.returncode == 0
    assert "INFERENCE_URL" in result.stdout
    assert "PORT" in result.stdout
    code = (
        "import sys\nfrom lightning_app.ui.launch import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'gradio' not in sys.modules\n"
    )
    assert run_python("-c", code).returncode == 0


def test_a_bad_setting_is_one_line_and_exit_2() -> None:
    result = run_python("-m", "lightning_app.ui", env={**os.environ, "INFERENCE_TIMEOUT": "soon"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: INFERENCE_TIMEOUT must be a number of seconds, got 'soon'"
    ]


def test_bad_settings_in_process_return_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lightning_app.ui.launch import main

    monkeypatch.setenv("INFERENCE_URL", "127.0.0.1:8080")
    assert main([]) == 2
    assert (
        capsys.readouterr().err
        == "error: INFERENCE_URL must be an http:// or https:// URL, got '127.0.0.1:8080'\n"
    )


def test_a_taken_port_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lightning_app.ui.launch import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.delenv("PORT", raising=False)
        monkeypatch.setenv("UI_PORT", str(port))
        assert main([]) == 1
    err = capsys.readouterr().err
    assert f"error: cannot listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in err


def test_prediction_rendering_shows_every_class_the_model_and_latency() -> None:
    prediction = Prediction("tumor", {"tumor": 0.875, "no_tumor": 0.125}, "brain_mri", "7", 42.4)
    text = render_prediction(prediction)
    assert "Prediction: **tumor**" in text
    assert "| tumor | 0.8750 |" in text
    assert "| no_tumor | 0.1250 |" in text
    assert "`brain_mri` version `7`" in text
    assert "42 ms" in text
    assert "Could not classify" in render_error("Inference service unavailable: x")
    assert "Screening decision" not in text  # an export without an operating point


def test_prediction_rendering_shows_the_screening_decision() -> None:
    decision = Decision("tumor", 0.3125, 0.12, "sensitivity >= 97% for any class but no_tumor")
    probs = {"no_tumor": 0.6875, "tumor": 0.3125}
    prediction = Prediction("no_tumor", probs, "m", None, 5.0, decision=decision)
    text = render_prediction(prediction)
    assert "Prediction: **no_tumor**" in text
    assert "Screening decision: **tumor** (score 0.312, threshold 0.120; sensitivity >= 97%" in text


def test_prediction_rendering_names_the_heatmap_method() -> None:
    """The page says which method made the map (the server's ``SERVE_HEATMAP`` choice)."""
    shown_as = {
        "cam": "CAM",
        "layer-cam": "LayerCAM",
        "gradient-input": "gradient x input",
        "occlusion": "occlusion",
    }
    for method, shown in shown_as.items():
        heatmap = Heatmap(b"", "tumor", method)
        text = render_prediction(Prediction("tumor", {"tumor": 1.0}, "m", None, 5.0, heatmap=heatmap))
        assert f"Heatmap: {shown} for class **tumor**" in text


def test_health_badge_escapes_and_reports_workers() -> None:
    settings = Settings(inference_url="http://127.0.0.1:8080")
    info = ModelInfo("brain_mri", "1.0", 1, 2)
    badge = render_health(Health(True, "Healthy"), info, settings)
    assert "TorchServe healthy" in badge
    assert "version 1.0, 1/2 workers ready" in badge
    bad = render_health(Health(False, "<script>x</script>"), None, settings)
    assert "not healthy" in bad
    assert "<script>" not in bad


def test_examples_are_held_out_br35h_scans_two_per_class() -> None:
    from lightning_app.data.sources import embedded_br35h

    rows = list(csv.DictReader((EXAMPLES_DIR / "SOURCES.csv").open()))
    assert sorted(r["file"] for r in rows) == sorted(p.name for p in example_scans())
    per_class: dict[str, int] = {}
    for row in rows:
        data = (EXAMPLES_DIR / row["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        assert (embedded_br35h() / row["source"]).read_bytes() == data, "byte-identical to the Br35H original"
        assert row["split"] == "test"
        label = CLASS_OF_FOLDER[row["source"].split("/")[0]]
        assert row["file"].startswith(f"{label}-")
        assert example_caption(EXAMPLES_DIR / row["file"]).startswith(label)
        per_class[label] = per_class.get(label, 0) + 1
    assert per_class == {"no_tumor": 2, "tumor": 2}


def test_examples_are_in_the_test_split_of_the_prepared_data() -> None:
    split_csv = REPO / "data/br35h/split.csv"
    if not split_csv.is_file():
        pytest.skip("data/br35h is not prepared here (make data)")
    split = {r["path"]: r["split"] for r in csv.DictReader(split_csv.open())}
    for row in csv.DictReader((EXAMPLES_DIR / "SOURCES.csv").open()):
        assert split[row["source"]] == "test", row
