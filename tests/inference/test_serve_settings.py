"""Serving settings: one reader of the environment, documented defaults, one-line errors."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest
import torch

from lightning_app.inference.eager import TorchBackend
from lightning_app.inference.engine import InferenceEngine
from lightning_app.inference.settings import MAX_IMAGE_BYTES, LogSettings, ServeSettings, SettingsError
from tests.conftest import REPO
from tests.inference.model_dirs import write_model_dir


def test_defaults_are_the_documented_ones() -> None:
    settings = ServeSettings.from_env({})
    assert settings == ServeSettings()
    assert settings.max_image_bytes == MAX_IMAGE_BYTES == 8 * 2**20
    assert settings.torch_threads is None and settings.precision is None
    assert settings.max_concurrency == 32
    assert settings.log == LogSettings(enabled=True, sample=1.0)


def test_every_variable_is_read() -> None:
    env = {
        "SERVE_MAX_IMAGE_BYTES": "1000",
        "SERVE_TORCH_THREADS": "3",
        "SERVE_PRECISION": "onnx-fp32",
        "SERVE_MAX_CONCURRENCY": "0",
        "SERVE_HEATMAP": "Layer-CAM",
        "PREDLOG_ENABLED": "off",
        "PREDLOG_SAMPLE": "0.25",
    }
    settings = ServeSettings.from_env(env)
    assert settings == ServeSettings(
        max_image_bytes=1000,
        torch_threads=3,
        precision="onnx-fp32",
        max_concurrency=0,
        heatmap="layer-cam",
        log=LogSettings(enabled=False, sample=0.25),
    )
    assert settings.threads(workers=2) == 3
    assert ServeSettings.from_env({"SERVE_TORCH_THREADS": "0"}).threads(2) == 0  # the libraries' default
    assert ServeSettings.from_env({"SERVE_PRECISION": "", "SERVE_TORCH_THREADS": ""}) == ServeSettings()
    assert ServeSettings.from_env({"SERVE_HEATMAP": "auto"}) == ServeSettings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SERVE_MAX_IMAGE_BYTES", "8MiB"),
        ("SERVE_MAX_IMAGE_BYTES", "0"),
        ("SERVE_TORCH_THREADS", "two"),
        ("SERVE_TORCH_THREADS", "-1"),
        ("SERVE_PRECISION", "int4"),
        ("SERVE_MAX_CONCURRENCY", "-1"),
        ("SERVE_HEATMAP", "grad-cam++"),
    ],
)
def test_an_unusable_value_is_one_line_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        ServeSettings.from_env({name: value})
    message = str(info.value)
    assert message.startswith(f"{name}={value!r}") and "\n" not in message


def test_an_unknown_heatmap_method_is_refused_once_with_the_choices() -> None:
    """The one check of ``SERVE_HEATMAP`` (the explainer trusts it): the message lists every choice."""
    with pytest.raises(
        SettingsError,
        match=r"^SERVE_HEATMAP='score-cam': .*expected auto, cam, layer-cam, gradient-input, occlusion$",
    ):
        ServeSettings.from_env({"SERVE_HEATMAP": "Score-CAM"})


def test_nothing_else_in_inference_reads_the_environment() -> None:
    readers = []
    for path in sorted((REPO / "lightning_app" / "inference").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("environ", "getenv")
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
            ):
                readers.append(path.name)
    assert sorted(set(readers)) == ["settings.py"]


def test_the_engine_never_reads_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVE_PRECISION", "int4")  # would have been refused when the engine read it
    monkeypatch.setenv("SERVE_TORCH_THREADS", "many")
    threads = torch.get_num_threads()
    engine = InferenceEngine(write_model_dir(tmp_path))
    assert isinstance(engine.backend, TorchBackend) and torch.get_num_threads() == threads


def test_sampling_keeps_about_the_asked_fraction() -> None:
    half = LogSettings(sample=0.5)
    kept = sum(half.keep(random.Random(i)) for i in range(400))
    assert 150 < kept < 250
    assert not LogSettings(enabled=False).keep()
