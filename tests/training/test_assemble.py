"""``make fit-ensemble``'s last step on real runs: two ResNet-18 members trained by the real CLI
on real scans, assembled, tested, exported as one ONNX graph and served by the inference core."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from lightning_app.cli import main as cli
from lightning_app.data.pixels import split_pixels
from lightning_app.export.build import build_mar, mar_meta
from lightning_app.export.cli import served_backend
from lightning_app.export.context import ExportError
from lightning_app.inference import artefacts
from lightning_app.inference.backends import load_backend
from lightning_app.inference.cascade import CascadeBackend, CascadeRule
from lightning_app.inference.service import Incoming, ModelService
from lightning_app.inference.settings import ServeSettings
from lightning_app.models.classifier import Classifier
from lightning_app.training import assemble, model_card, predictions
from serve.litserve_metrics import PrometheusCache

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def members(small_br35h: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two short ResNet-18 runs of one recipe at seeds 1 and 2 (each fitted and calibrated by ``fit``)."""
    root = tmp_path_factory.mktemp("members")
    for seed in (1, 2):
        cli(
            [
                "fit",
                "--config", str(REPO / "configs/smoke.yaml"),
                "--model.backbone", "resnet18",
                "--data.data_dir", str(small_br35h),
                "--data.cache_dir", str(root / "cache"),
                "--trainer.default_root_dir", str(root / f"seed{seed}"),
                "--trainer.logger", "false",
                "--trainer.enable_progress_bar", "false",
                "--trainer.limit_train_batches", "4",
                "--seed_everything", str(seed),
            ]
        )  # fmt: skip
    return [root / "seed1", root / "seed2"]


@pytest.fixture(scope="module")
def ensemble_run(members: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ensemble")
    return assemble.run(members, out, threshold=0.3, source="out-of-fold (a test's choice)")


def test_the_ensemble_is_tested_once_with_the_given_threshold_and_averages_its_members(
    members: list[Path], ensemble_run: Path
) -> None:
    metrics = json.loads((ensemble_run / "metrics.json").read_text())
    point = metrics["operating_point"]
    assert point["threshold"] == 0.3 and point["chosen_on"] == "out-of-fold (a test's choice)"
    assert set(point["test"]) == {"sensitivity", "specificity"}
    assert metrics["calibration"]["temperature"] == 1.0  # the average of calibrated members, as CV measured
    assert metrics["confidence_intervals"]["n_groups"] > 1
    # its test probabilities are the mean of the members' own (calibrated) test probabilities
    own = [predictions.read(next(m.glob("version_*")) / predictions.FILE) for m in members]
    got = predictions.read(ensemble_run / predictions.FILE)
    assert got.paths == own[0].paths
    torch.testing.assert_close(got.probs, (own[0].probs + own[1].probs) / 2, atol=2e-6, rtol=0)
    config = yaml.safe_load((ensemble_run / "config.yaml").read_text())  # what the model card reads
    assert config["seed_everything"] == [1, 2] and config["model"]["backbone"] == "resnet18x2"
    card = ensemble_run / "card.md"
    assert model_card.main(["--run", str(ensemble_run), "--out", str(card)]) == 0
    text = card.read_text()
    assert "An ensemble of 2 networks" in text and "seed [1, 2]" in text and "(T = 1)" in text
    model = Classifier.load_from_checkpoint(ensemble_run / "checkpoints" / assemble.CHECKPOINT)
    assert model.hparams["backbone"] == "resnet18x2" and float(model.state_dict()["temperature"]) == 1.0


def test_the_ensemble_exports_as_one_graph_and_serves_its_decision_and_heatmap(
    ensemble_run: Path, small_br35h: Path, tmp_path: Path
) -> None:
    mar = build_mar(
        ensemble_run / "checkpoints" / assemble.CHECKPOINT,
        tmp_path / "store",
        data_dir=small_br35h,
        precision="onnx-fp32",
    )
    meta = mar_meta(mar)
    assert meta["backbone"] == "resnet18x2" and meta["backend"]["parity"]["agreement"] == 1.0
    assert meta["ood"] and meta["operating_point"]["threshold"] == 0.3
    model_dir = tmp_path / "model"
    with zipfile.ZipFile(mar) as archive:
        archive.extractall(model_dir)
    service = ModelService()
    service.load(model_dir, ServeSettings())
    pixels, _ = split_pixels(small_br35h, "test", image_size=64)
    _, answers = service.predict(pixels[:4].numpy())
    tested = predictions.read(ensemble_run / predictions.FILE)
    for answer, probs in zip(answers, tested.probs[:4], strict=True):
        served = {p["label"]: p["probability"] for p in answer["probabilities"]}
        np.testing.assert_allclose([served[n] for n in tested.class_names], probs.numpy(), atol=1e-4)
        assert answer["decision"]["threshold"] == 0.3
    _, explained = service.explain(pixels[:1].numpy(), [None])
    block = explained[0]["explanation"]
    assert (block["method"], block["layer"], block["backend"]) == ("cam", "layer4", "onnx-fp32")
    # LayerCAM back-propagates through the fp32 ensemble to its concatenated layer3 tap
    fine = ModelService()
    fine.load(model_dir, ServeSettings(heatmap="layer-cam"))
    _, explained = fine.explain(pixels[:1].numpy(), [None])
    block = explained[0]["explanation"]
    assert (block["method"], block["layer"], block["backend"]) == ("layer-cam", "layer3", "fp32")
    assert block["peak"] > 0


@torch.no_grad()
def test_members_of_different_widths_assemble_into_one_network_named_by_each() -> None:
    """The served default's shape: a three-quarter-width ResNet-18 first, full-width ones behind it."""
    torch.manual_seed(0)
    nets = [Classifier(backbone=b).eval() for b in ("resnet18_w48", "resnet18", "resnet18")]
    nets[1].temperature.fill_(2.0)
    x = torch.randn(2, 1, 64, 64)
    expected = torch.stack([m.probabilities(m(x)) for m in nets]).mean(0)
    model = assemble.assemble(nets, threshold=0.25, source="out-of-fold (a test's choice)")
    assert model.hparams["backbone"] == "resnet18_w48+resnet18x2"
    torch.testing.assert_close(model(x).softmax(1), expected, atol=1e-6, rtol=0)
    rebuilt = Classifier(**model.hparams).eval()  # what `make mar` and serving rebuild from the name
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt(x), model(x))


def test_the_report_names_the_members_recipe_and_their_widths_when_they_differ(tmp_path: Path) -> None:
    """``make fit-ensemble`` trains unlike widths from one config file: the report names both."""
    paths = []
    for name, config in (("a", "configs/default.yaml"), ("b", "configs/default.yaml"), ("c", "x.yaml")):
        run = tmp_path / name / "version_0"
        (run / "checkpoints").mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"config": config}))
        paths.append(run / "checkpoints" / "best-epoch=01.ckpt")
    assert assemble.recipes(paths[:2], "resnet18x2") == "configs/default.yaml x 2 seeds"
    assert (
        assemble.recipes(paths[:2], "resnet18_w48+resnet18")
        == "configs/default.yaml x 2 seeds, backbones resnet18_w48+resnet18"
    )
    assert assemble.recipes(paths, "resnet18x3") == "configs/default.yaml + configs/default.yaml + x.yaml"


def test_members_of_different_recipes_are_refused_in_one_line_and_nothing_is_written(
    members: list[Path], trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ensemble"
    assert assemble.main([str(members[0]), str(trained_run), "--out", str(out)]) == 2  # small_cnn vs resnet18
    assert "differ in architecture (resnet18, small_cnn)" in capsys.readouterr().err
    assert assemble.main([str(members[0]), str(tmp_path / "missing"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no best-*.ckpt under") and err.count("\n") == 1
    assert assemble.main([str(members[0]), "--out", str(out)]) == 2
    assert "at least two members" in capsys.readouterr().err
    assert not out.exists()


def test_the_ensemble_serves_as_a_cascade_its_first_member_alone_where_it_is_sure(
    members: list[Path], ensemble_run: Path, small_br35h: Path, tmp_path: Path
) -> None:
    ckpt = ensemble_run / "checkpoints" / assemble.CHECKPOINT
    # these 4-batch members are weak: their first alone (C = 0.5: never deferring) decides
    # otherwise than the pair on more than 1 % of the held-out scans, and the gate refuses it
    with pytest.raises(
        ExportError, match=r"the cascade gate refused confidence 0.5, margin 0.0 .* screening decisions agree"
    ) as refused:
        build_mar(
            ckpt, tmp_path / "no", data_dir=small_br35h, precision="onnx-fp32", cascade=CascadeRule(0.5)
        )
    assert "\n" not in str(refused.value) and not list((tmp_path / "no").glob("*.mar"))
    # make demo's CASCADE_FALLBACK=1: the same refusal serves the whole (gated) ensemble, and says so
    whole = build_mar(
        ckpt,
        tmp_path / "whole",
        data_dir=small_br35h,
        precision="onnx-fp32",
        cascade=CascadeRule(0.5),
        cascade_fallback=True,
    )
    backend = mar_meta(whole)["backend"]
    assert "cascade" not in backend and backend["file"] == "model_fp32.onnx"
    assert backend["cascade_refused"]["rule"] == {"confidence": 0.5, "margin": 0.0}
    assert backend["cascade_refused"]["parity"]["decision_agreement"] < 0.99
    with zipfile.ZipFile(whole) as archive:
        assert "model_fp32.onnx" in archive.namelist() and "model_fp32_first.onnx" not in archive.namelist()
    assert "refused by its gate (confidence 0.5, margin 0.0: screening decisions agree" in served_backend(
        mar_meta(whole)
    ) and served_backend(mar_meta(whole)).endswith("the whole ensemble is served")
    mar = build_mar(
        ckpt, tmp_path / "store", data_dir=small_br35h, precision="onnx-fp32", cascade=CascadeRule(0.9, 0.5)
    )
    cascade = mar_meta(mar)["backend"]["cascade"]
    assert (cascade["file"], cascade["followers"], cascade["members"]) == (
        "model_fp32_first.onnx",
        "model_fp32_followers.onnx",
        2,
    )
    assert cascade["rule"] == {
        "confidence": 0.9,
        "margin": 0.5,
    }
    assert cascade["parity"]["agreement"] >= 0.99 and cascade["parity"]["decision_agreement"] >= 0.99
    summary = served_backend(mar_meta(mar))  # what make mar prints
    assert "model_fp32_first.onnx, then model_fp32_followers.onnx on the doubtful scans" in summary
    assert "they replace model_fp32.onnx" in summary and "screening decisions" in summary
    model_dir = tmp_path / "model"
    with zipfile.ZipFile(mar) as archive:
        archive.extractall(model_dir)
        graphs = sorted(n for n in archive.namelist() if n.endswith(".onnx"))
    # the two graphs replace the whole one (the same weights)
    assert (
        graphs == ["model_fp32_first.onnx", "model_fp32_followers.onnx"]
        and cascade["replaces"] == "model_fp32.onnx"
    )
    registry, service = CollectorRegistry(), ModelService()
    service.load(model_dir, ServeSettings(), metrics_cache=PrometheusCache(registry))
    assert service.engine is not None
    backend = service.engine.backend
    assert isinstance(backend, CascadeBackend) and backend.name == "onnx-fp32-cascade"
    # the routing on the real graphs: a confidence that half the first member's test answers reach
    pixels, _ = split_pixels(small_br35h, "test", image_size=64)
    own = predictions.read(next(members[0].glob("version_*")) / predictions.FILE).probs
    backend.rule = CascadeRule(float(own.max(1).values.median()))
    _, answers = service.predict(pixels.numpy())
    pair = predictions.read(ensemble_run / predictions.FILE)
    sure = own.max(1).values >= backend.rule.confidence
    assert 0 < int(sure.sum()) < len(sure)
    expected = torch.where(sure[:, None], own, pair.probs)  # the member where sure, the pair elsewhere
    for answer, probs in zip(answers, expected, strict=True):
        served = {p["label"]: p["probability"] for p in answer["probabilities"]}
        np.testing.assert_allclose([served[n] for n in pair.class_names], probs.numpy(), atol=1e-4)
        assert "decision" in answer and "in_distribution" in answer
    # served requests: the scans sent on to the other member are counted on /metrics
    with (small_br35h / "split.csv").open() as f:
        files = [small_br35h / row["path"] for row in csv.DictReader(f) if row["split"] == "test"]
    before = backend.deferred
    assert all(r.status == 200 for r in service.serve([Incoming({"body": p.read_bytes()}) for p in files]))
    sent = backend.deferred - before
    assert 0 < sent < len(files)
    assert (
        f'model_cascade_deferred_total{{ModelName="brain_mri"}} {float(sent)}'
        in generate_latest(registry).decode()
    )
    (model_dir / "model_fp32_followers.onnx").unlink()  # an archive that lost a graph
    with pytest.raises(ValueError, match=r"cascade graph model_fp32_followers\.onnx is missing: re-export"):
        load_backend(model_dir, artefacts.read_meta(model_dir))
