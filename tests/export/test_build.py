"""Checkpoint -> state_dict + index_to_name.json + metadata -> brain_mri.mar (real archiver)."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest
import torch

from lightning_app.data.atomic import file_digest
from lightning_app.export import build as export
from lightning_app.export import cli, context
from lightning_app.models.backbones import build_backbone
from lightning_app.models.classifier import Classifier
from tests.serve.serve_models import CLASSES_4, untrained_checkpoint


def test_export_of_the_trained_model_rebuilds_without_lightning(
    trained_checkpoint: Path, tmp_path: Path
) -> None:
    out = export.export(trained_checkpoint, tmp_path)
    meta = json.loads(out.meta.read_text())
    assert meta["backbone"] == "small_cnn"
    assert meta["num_classes"] == 2
    assert meta["in_channels"] == 1
    assert meta["class_names"] == ["no_tumor", "tumor"]
    assert meta["preprocessing"] == {"image_size": 64, "mean": 0.5, "std": 0.25}
    assert meta["version"] == file_digest(trained_checkpoint)[:12]
    assert json.loads(out.index_to_name.read_text()) == {"0": "no_tumor", "1": "tumor"}
    state = torch.load(out.weights, weights_only=True)  # a plain state_dict: no pickled classes
    net = build_backbone(meta["backbone"], num_classes=meta["num_classes"], in_channels=meta["in_channels"])
    net.load_state_dict(state)
    reference = Classifier.load_from_checkpoint(trained_checkpoint, map_location="cpu").net.eval()
    x = torch.randn(3, 1, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(net.eval()(x), reference(x), atol=1e-5)


def test_mar_holds_the_handler_weights_and_class_names_but_no_checkpoint(tmp_path: Path) -> None:
    ckpt = untrained_checkpoint(tmp_path / "best-epoch=00.ckpt", CLASSES_4)
    mar = export.build_mar(ckpt, tmp_path / "store")
    assert mar == tmp_path / "store" / "brain_mri.mar"
    with zipfile.ZipFile(mar) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
        index = json.loads(archive.read("index_to_name.json"))
    assert {
        "handler.py",
        "state_dict.pt",
        "index_to_name.json",
        "model_meta.json",
        "model-config.yaml",
    } <= names
    assert not [n for n in names if n.endswith(".ckpt")]
    assert manifest["model"]["modelName"] == "brain_mri"
    assert manifest["model"]["handler"] == "handler.py"
    assert list(index.values()) == CLASSES_4
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["brain_mri.mar"]  # no temp files left


def test_the_archiver_stages_in_a_directory_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch-model-archiver wipes ``$TMPDIR/<model name>``: another build's staging must survive."""
    shared = tmp_path / "tmp" / "brain_mri"
    shared.mkdir(parents=True)
    (shared / "ood_stats.pt").write_bytes(b"another build's file")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    mar = export.build_mar(untrained_checkpoint(tmp_path / "m.ckpt", ["a", "b"]), tmp_path / "store")
    assert zipfile.ZipFile(mar).getinfo("state_dict.pt").file_size > 0
    assert (shared / "ood_stats.pt").read_bytes() == b"another build's file"


def test_newest_best_checkpoint_is_picked_by_time(tmp_path: Path) -> None:
    old = tmp_path / "a" / "version_0" / "checkpoints" / "best-epoch=05.ckpt"
    new = tmp_path / "b" / "version_3" / "checkpoints" / "best-epoch=01.ckpt"
    for i, path in enumerate((old, new)):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        os.utime(path, (1_000 + i, 1_000 + i))
    (tmp_path / "b" / "version_3" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert export.newest_best_checkpoint(tmp_path) == new


def test_cli_builds_the_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = untrained_checkpoint(
        tmp_path / "runs" / "version_0" / "checkpoints" / "best-epoch=00.ckpt", ["a", "b"]
    )
    assert cli.main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert str(ckpt) in out
    assert (tmp_path / "store" / "brain_mri.mar").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ckpt", "missing.ckpt"], "checkpoint not found: missing.ckpt"),
        (["--runs", "no-runs-here"], "no best-*.ckpt under no-runs-here/"),
    ],
)
def test_cli_errors_are_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}")
    assert err.count("\n") == 1


def test_a_corrupt_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "best.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(context.ExportError, match="cannot load checkpoint"):
        export.export(bad, tmp_path / "out")


def test_an_archiver_failure_leaves_no_archive(tmp_path: Path) -> None:
    exported = export.export(untrained_checkpoint(tmp_path / "m.ckpt", ["a", "b"]), tmp_path / "out")
    with pytest.raises(context.ExportError, match="torch-model-archiver failed"):
        export.archive(exported, tmp_path / "store", handler=tmp_path / "no_such_handler.py")
    assert list((tmp_path / "store").iterdir()) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cascade", "1.5"], "a cascade needs a confidence in [0, 1] and a margin >= 0, got 1.5 and 0.0"),
        (["--cascade", "0.9", "--cascade-margin", "-1"], "a cascade needs a confidence in [0, 1]"),
        (["--cascade", "0.9"], "a cascade needs an ensemble (make fit-ensemble); small_cnn is one network"),
    ],
)
def test_a_cascade_that_cannot_be_built_is_one_line_and_no_archive(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = untrained_checkpoint(tmp_path / "best-epoch=00.ckpt", ["a", "b"])
    assert cli.main(["--ckpt", str(ckpt), "--out", str(tmp_path / "store"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "store" / "brain_mri.mar").exists()
