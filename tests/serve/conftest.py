"""Fixtures of the serving tests (``served_model`` and ``lit_served_model`` live in tests/conftest.py).

``server`` runs a contract test against both runtimes (TorchServe, then LitServe) on the same ``.mar``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.serve.serve_models import CLASSES_4, untrained_checkpoint


@pytest.fixture(scope="session")
def four_class_mar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``brain_mri.mar`` of a 4-class model, exported from a Lightning checkpoint."""
    from lightning_app.export.build import build_mar

    root = tmp_path_factory.mktemp("four_class")
    return build_mar(untrained_checkpoint(root / "best-epoch=00.ckpt", CLASSES_4), root / "model_store")


@pytest.fixture(scope="module", params=["torchserve", "litserve"])
def server(request: pytest.FixtureRequest):
    """The session's TorchServe, then its LitServe: the REST contract tests run against both."""
    return request.getfixturevalue("served_model" if request.param == "torchserve" else "lit_served_model")
