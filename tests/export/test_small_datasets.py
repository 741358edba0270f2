"""Small and unusual data sets: fit -> ``.mar`` -> an answer, or one clear line before training.

Real Br35H scans relabelled into 2-6 classes (the labels carry no signal: these tests are about
the pipeline, not accuracy), in both folder layouts, trained with the smoke config through the
real CLI for one short epoch, exported with the real steps, answered by the exported model.
"""

from __future__ import annotations

import shutil
import zipfile
from itertools import chain, zip_longest
from pathlib import Path

import pytest

from lightning_app.data.sources import embedded_br35h
from lightning_app.export import build, cli
from lightning_app.export.context import ExportError
from lightning_app.inference import artefacts
from lightning_app.inference.engine import InferenceEngine
from lightning_app.inference.parity import ParityBounds

REPO = Path(__file__).resolve().parents[2]


def scans(offset: int = 500) -> list[Path]:
    """Real scans, alternating the two Br35H folders (a fixed, duplicate-free order)."""
    source = embedded_br35h()
    no, yes = (sorted((source / c).iterdir())[offset:] for c in ("no", "yes"))
    return [p for p in chain.from_iterable(zip_longest(no, yes)) if p is not None]


def make_folder(root: Path, train: dict[str, int], test: dict[str, int] | None = None) -> Path:
    """``root/<class>/`` with ``train[c]`` scans each, or the Kaggle layout when ``test`` is given."""
    pool = iter(scans())
    parts = [("Training", train), ("Testing", test)] if test is not None else [("", train)]
    for part, counts in parts:
        for name, n in counts.items():
            folder = root / part / name
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(n):
                f = next(pool)
                shutil.copy2(f, folder / f.name)
    return root


def fit(root: Path, runs: Path) -> None:
    """The smoke config through the real CLI, one short epoch (as ``make fit CONFIG=configs/smoke.yaml``)."""
    from lightning_app.cli import main

    main(
        [
            "fit",
            "--config", str(REPO / "configs/smoke.yaml"),
            "--data.data_dir", str(root),
            "--data.cache_dir", str(runs / "cache"),
            "--data.batch_size", "16",
            "--trainer.default_root_dir", str(runs),
            "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false",
            "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "2",
        ]
    )  # fmt: skip


def answer_a_scan(mar: Path, out: Path) -> dict:
    """Unpack ``mar`` as TorchServe does and let its exported model answer one real scan."""
    with zipfile.ZipFile(mar) as archive:
        archive.extractall(out)
    engine = InferenceEngine(out)
    (answer,) = engine.predict(engine.decode(scans(offset=1400)[0].read_bytes())[None])
    return answer


def fits_and_serves(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    """Fit, ``make mar``'s CLI, and an answer; returns ``model_meta.json``."""
    fit(root, tmp_path / "runs")
    (ckpt,) = (tmp_path / "runs").glob("version_0/checkpoints/best-*.ckpt")
    capsys.readouterr()
    assert cli.main(["--ckpt", str(ckpt), "--out", str(tmp_path / "store")]) == 0  # data: the ckpt's own
    printed = capsys.readouterr().out
    mar = tmp_path / "store" / f"{artefacts.MODEL_NAME}.mar"
    meta = build.mar_meta(mar)
    ood = meta["ood"]
    (line,) = [x for x in printed.splitlines() if x.startswith("ood guard:")]  # one line says what shipped
    if not ood["fitted"]:
        assert ood["reason"] and line.startswith("ood guard:  none (")
    elif ood["pooled"]:
        assert ood["reason"] and "pooled" in line
    answer = answer_a_scan(mar, tmp_path / "model")
    assert answer["prediction"] in meta["class_names"]
    assert sum(p["probability"] for p in answer["probabilities"]) == pytest.approx(1.0)
    assert ("in_distribution" in answer) == bool(ood["fitted"])
    if meta["backend"]["precision"] == "fp32" and "note" in meta["backend"]:
        assert "cannot be judged" in meta["backend"]["note"] or "no training data" in meta["backend"]["note"]
    return meta


def refused(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], match: str) -> None:
    """``make fit`` on ``root`` stops before training with one ``error:`` line, exit code 2."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        fit(root, tmp_path / "runs")
    assert stopped.value.code == 2
    err = capsys.readouterr().err  # Lightning's INFO lines go there too
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and match in errors[0] and "Traceback" not in err, err
    assert not list((tmp_path / "runs").rglob("*.ckpt"))  # nothing was trained


def test_the_issue_folder_kaggle_4_classes_7_to_18_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The report: ``make fit`` worked, ``make mar`` died in the OOD fit (it read data/br35h's labels)."""
    root = make_folder(
        tmp_path / "kaggle4",
        {"glioma": 7, "meningioma": 12, "notumor": 18, "pituitary": 9},
        {"glioma": 3, "meningioma": 4, "notumor": 5, "pituitary": 3},
    )
    meta = fits_and_serves(root, tmp_path, capsys)
    assert meta["class_names"] == ["glioma", "meningioma", "notumor", "pituitary"]
    # the root cause: another prepared folder passed as --data is refused in one line, not fitted on
    other = make_folder(tmp_path / "br35h", {"no": 12, "yes": 12})
    from lightning_app.data.validate import prepare

    assert prepare(other, seed=0).ok
    (ckpt,) = (tmp_path / "runs").glob("version_0/checkpoints/best-*.ckpt")
    with pytest.raises(ExportError, match="holds classes no, yes, but the checkpoint was trained on glioma"):
        build.export(ckpt, tmp_path / "wrong", data_dir=other)
    assert cli.main(["--ckpt", str(ckpt), "--out", str(tmp_path / "s2"), "--data", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --data")


def test_tiny_two_class_plain_folder_ships_without_a_class_wise_guard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_folder(tmp_path / "tiny", {"a": 8, "b": 8})
    meta = fits_and_serves(root, tmp_path, capsys)
    assert not meta["ood"]["fitted"] or meta["ood"]["pooled"]
    assert meta["backend"]["precision"] in ("fp32", "int8")
    # a gate that refuses on a few held-out images: the default precision falls back to fp32, says why
    (ckpt,) = (tmp_path / "runs").glob("version_0/checkpoints/best-*.ckpt")
    strict = {"parity_bounds": ParityBounds(min_agreement=1.01)}
    backend = build.export(ckpt, tmp_path / "fallback", data_dir=root, options=strict).metadata["backend"]
    assert backend["precision"] == "fp32" and "cannot be judged" in backend["note"]
    assert not list((tmp_path / "fallback").glob("*.onnx"))
    with pytest.raises(ExportError, match="parity gate refused the int8 artefact"):  # asked for: refused
        build.export(ckpt, tmp_path / "asked", data_dir=root, options={**strict, "precision": "int8"})


@pytest.mark.slow
@pytest.mark.parametrize(
    ("train", "test"),
    [
        ({"c0": 30, "c1": 6, "c2": 6, "c3": 10, "c4": 5, "c5": 8}, None),  # 6 classes, imbalanced
        ({"big": 30, "small": 6, "mid": 10}, {"big": 4, "small": 2, "mid": 2}),  # Kaggle, 3 classes
    ],
    ids=["plain-6-imbalanced", "kaggle-3-imbalanced"],
)
def test_imbalanced_folders_fit_export_and_answer(
    train: dict[str, int], test: dict[str, int] | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    meta = fits_and_serves(make_folder(tmp_path / "data", train, test), tmp_path, capsys)
    assert meta["num_classes"] == len(train)
    assert "fitted" in meta["ood"]


@pytest.mark.parametrize(
    ("train", "test", "match"),
    [
        ({"a": 10, "b": 10, "one": 1}, None, "no images of class one (1 usable image(s) in all)"),
        ({"a": 10, "one": 1}, {"a": 3, "one": 2}, "has no images of class one ("),  # 1 in Training/
        ({"only": 12}, None, "one class only (only)"),
        ({"a": 10, "empty": 0}, None, "class folder is empty"),
        ({"a": 10, "b": 10}, {"a": 3}, "no images of class b"),
    ],
    ids=["single-image-class", "kaggle-single-image-class", "one-class", "empty-class", "kaggle-test-lacks"],
)
def test_untrainable_folders_are_refused_in_one_line_before_training(
    train: dict[str, int],
    test: dict[str, int] | None,
    match: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = make_folder(tmp_path / "data", train, test)
    refused(root, tmp_path, capsys, match)
