"""Export steps take their choices from the context, never from a server's environment.

The OOD guard is fitted on the backend the export ships (``metadata["backend"]``, written by
the precision step), even when ``SERVE_PRECISION`` names another one in the exporting shell;
the reference profile's PCA dimension is an export option, read from ``MONITOR_PCA_DIM`` only
by the export CLI.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_app.export.cli import env_pca_dim
from lightning_app.export.context import ExportContext, ExportError
from lightning_app.export.ood import fit_ood
from lightning_app.export.reference import PCA_DIM, pca_dim
from lightning_app.inference import artefacts
from lightning_app.inference.backends import export_onnx
from lightning_app.models.backbones import build_backbone


@pytest.mark.parametrize(("shipped", "environment"), [("onnx-fp32", "fp32"), ("fp32", "onnx-fp32")])
def test_the_ood_guard_is_fitted_on_the_shipped_backend(
    small_br35h: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shipped: str, environment: str
) -> None:
    monkeypatch.setenv("SERVE_PRECISION", environment)
    net = build_backbone("small_cnn", num_classes=2).eval()
    export_onnx(net, tmp_path / artefacts.ONNX_FP32, in_channels=1, image_size=64, backbone="small_cnn")
    metadata = {
        "backbone": "small_cnn",
        "num_classes": 2,
        "in_channels": 1,
        "preprocessing": {"image_size": 64, "mean": 0.5, "std": 0.25},
        "backend": {"precision": shipped},
    }
    ctx = ExportContext(
        net=net, metadata=metadata, out_dir=tmp_path, checkpoint=tmp_path / "x.ckpt", data_dir=small_br35h
    )
    fit_ood(ctx)
    assert ctx.metadata["ood"]["backend"] == shipped
    assert (tmp_path / artefacts.OOD_STATS) in ctx.files


def test_the_pca_dimension_is_an_option_read_from_the_environment_only_at_the_cli() -> None:
    assert pca_dim({}) == PCA_DIM == 16
    assert pca_dim({"pca_dim": 8}) == 8
    assert pca_dim({"pca_dim": 0}) == 1
    assert env_pca_dim({}) is None and env_pca_dim({"MONITOR_PCA_DIM": " "}) is None
    assert env_pca_dim({"MONITOR_PCA_DIM": "8"}) == 8
    with pytest.raises(ExportError, match="MONITOR_PCA_DIM"):
        env_pca_dim({"MONITOR_PCA_DIM": "eight"})
