"""Fixtures of the monitoring tests: the session's exported model, unpacked, and real windows."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from lightning_app.data.sources import embedded_br35h
from lightning_app.inference.engine import InferenceEngine


@pytest.fixture(scope="session")
def model_dir(mar_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's ``brain_mri.mar`` (with its reference profile) unpacked, as TorchServe does."""
    target = tmp_path_factory.mktemp("unpacked_mar")
    with zipfile.ZipFile(mar_file) as mar:
        mar.extractall(target)
    return target


@pytest.fixture(scope="session")
def engine(model_dir: Path) -> InferenceEngine:
    """The engine the handler would build from the same files."""
    return InferenceEngine(model_dir)


@pytest.fixture(scope="session")
def held_out() -> list[bytes]:
    """60 real scans (30 per class) that the session's model never saw (files 200+ of each class)."""
    root = embedded_br35h()
    return [p.read_bytes() for c in ("no", "yes") for p in sorted((root / c).glob("*.jpg"))[200:230]]
