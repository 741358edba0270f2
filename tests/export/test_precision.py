"""The served precision: int8 artefact, parity gate on held-out images, engine loading it.

Real pieces throughout: the small model trained in this session on real Br35H scans, its
real validation and test images, ONNX export, ONNX Runtime quantisation and inference.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from lightning_app.data.pixels import split_pixels
from lightning_app.export import build as export
from lightning_app.export import cli, context
from lightning_app.export.gate import parity
from lightning_app.inference import artefacts
from lightning_app.inference.backends import OnnxBackend, export_onnx, precision_of
from lightning_app.inference.eager import TorchBackend, load_network
from lightning_app.inference.engine import InferenceEngine
from lightning_app.inference.parity import ParityBounds
from lightning_app.inference.settings import ServeSettings, SettingsError
from lightning_app.models.classifier import Classifier
from lightning_app.transforms import EvalPreset
from tests.serve.serve_models import CLASSES_4, untrained_checkpoint

NORMALISE = EvalPreset(mean=0.5, std=0.25)


def held_out(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [split_pixels(root, split, image_size=64) for split in ("val", "test")]
    return torch.cat([p for p, _ in parts]), torch.cat([t for _, t in parts])


@pytest.mark.slow
def test_default_mar_serves_int8_that_passed_the_gate_and_keeps_features(
    trained_checkpoint: Path, small_br35h: Path, tmp_path: Path
) -> None:
    mar = export.build_mar(trained_checkpoint, tmp_path / "store", data_dir=small_br35h)
    with zipfile.ZipFile(mar) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "model")
    assert artefacts.ONNX_INT8 in names and artefacts.ONNX_FP32 not in names  # only the served one
    backend = json.loads((tmp_path / "model" / artefacts.META).read_text())["backend"]
    assert backend["precision"] == "int8"
    assert backend["calibration"] == {"split": "train", "images": 100, "seed": 0}
    gate = backend["parity"]
    assert gate["splits"] == ["val", "test"] and gate["images"] > 0
    assert gate["agreement"] >= 0.995 and gate["accuracy_drop"] <= 0.0025
    assert 0 <= gate["max_abs_prob_diff"] < 0.5

    engine = InferenceEngine(tmp_path / "model")
    assert engine.backend.name == "int8"
    pixels, labels = held_out(small_br35h)
    served = engine.forward(pixels)
    fp32 = TorchBackend(load_network(tmp_path / "model", engine.meta))(NORMALISE(pixels))
    assert served.features.shape == fp32.features.shape  # OOD scores and logs keep their input
    assert (served.logits.argmax(1) == fp32.logits.argmax(1)).mean() >= 0.995
    assert float((served.logits.argmax(1) == labels.numpy()).mean()) == pytest.approx(gate["accuracy"])


@pytest.mark.slow
def test_the_gate_refuses_an_artefact_that_disagrees(
    trained_checkpoint: Path, small_br35h: Path, tmp_path: Path
) -> None:
    """A network with perturbed weights stands in for a broken quantisation."""
    net = Classifier.load_from_checkpoint(trained_checkpoint, map_location="cpu").net.eval()
    broken = Classifier.load_from_checkpoint(trained_checkpoint, map_location="cpu").net.eval()
    with torch.no_grad():
        for param in broken.parameters():
            param.add_(torch.randn_like(param) * param.std().nan_to_num() * 2)
    candidate = OnnxBackend(export_onnx(broken, tmp_path / "b.onnx", in_channels=1, image_size=64), name="x")
    pixels, labels = held_out(small_br35h)
    result = parity(net, candidate, NORMALISE(pixels), labels)
    assert result.violations(ParityBounds())
    same = OnnxBackend(export_onnx(net, tmp_path / "same.onnx", in_channels=1, image_size=64), name="y")
    assert parity(net, same, NORMALISE(pixels), labels).violations(ParityBounds()) == []

    with pytest.raises(context.ExportError, match="parity gate refused the int8 artefact"):
        export.export(
            trained_checkpoint,
            tmp_path / "refused",
            data_dir=small_br35h,
            options={"precision": "int8", "parity_bounds": ParityBounds(min_agreement=1.01)},
        )


def test_without_data_the_export_is_fp32_and_says_why(tmp_path: Path) -> None:
    ckpt = untrained_checkpoint(tmp_path / "best-epoch=00.ckpt", CLASSES_4)
    meta = export.export(ckpt, tmp_path / "out").metadata
    assert meta["backend"]["precision"] == "fp32"
    assert "no training data" in meta["backend"]["note"]
    assert not list((tmp_path / "out").glob("*.onnx"))
    with pytest.raises(context.ExportError, match="needs the training data"):
        export.export(ckpt, tmp_path / "int8", options={"precision": "int8"})
    with pytest.raises(context.ExportError, match="unknown precision"):
        export.export(ckpt, tmp_path / "bad", options={"precision": "fp4"})


def test_serve_precision_overrides_the_export(monkeypatch: pytest.MonkeyPatch) -> None:
    meta = {"backend": {"precision": "int8"}}
    assert precision_of(meta, ServeSettings.from_env({}).precision) == "int8"
    assert precision_of(meta, ServeSettings.from_env({"SERVE_PRECISION": "fp32"}).precision) == "fp32"
    assert precision_of({}) == "fp32"
    with pytest.raises(SettingsError, match=r"SERVE_PRECISION.*unknown precision"):
        ServeSettings.from_env({"SERVE_PRECISION": "int4"})
    with pytest.raises(ValueError, match="unknown precision"):
        precision_of(meta, "int4")


@pytest.mark.slow
def test_make_mar_precision_onnx_fp32_prints_its_gate(
    trained_checkpoint: Path, small_br35h: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--ckpt", str(trained_checkpoint), "--out", str(tmp_path), "--data", str(small_br35h)]
    assert cli.main([*argv, "--precision", "onnx-fp32"]) == 0
    out = capsys.readouterr().out
    assert "backend:    onnx-fp32 (model_fp32.onnx): top-1 agreement 100.00%" in out
    with zipfile.ZipFile(tmp_path / "brain_mri.mar") as archive:
        assert artefacts.ONNX_FP32 in archive.namelist()
