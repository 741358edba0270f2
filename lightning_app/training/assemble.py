"""Trained runs -> ONE ensemble checkpoint, its operating point set, tested once (``make fit-ensemble``).

``make cv`` chose a seed ensemble (docs/cv_study.md): the same recipe trained at several
seeds, the members' calibrated probabilities averaged. Members may differ in width
(``resnet18_w48+resnet18x2``, docs/benchmarks.md (y)), not in task, preprocessing or family.
This step takes the members' best checkpoints (each already calibrated on the validation
split by ``fit``) and writes a checkpoint of a :class:`~lightning_app.models.classifier.Classifier`
whose backbone is their :class:`~lightning_app.models.ensemble.Ensemble` (``resnet18x3``).
Its temperature stays 1: the average of calibrated members is what CV measured. The
screening threshold is the one given (chosen on the ensemble's out-of-fold scans) or,
without one, chosen on validation.
Then it tests the ensemble on the held-out split, as ``fit`` tests a single network:
``metrics.json`` with group-bootstrap CIs, ``predictions.csv``, figures. ``make mar`` exports
it like any checkpoint (one ONNX graph, int8 behind the parity gate).

``python -m lightning_app.training.assemble runs/ensemble/members/seed42 runs/ensemble/members/seed7
runs/ensemble/members/seed11 --out runs/ensemble --threshold 0.270``
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
import yaml

from lightning_app.data.atomic import write_atomic, write_text
from lightning_app.data.datamodule import ImageFolderDataModule
from lightning_app.errors import UserError
from lightning_app.models.classifier import Classifier
from lightning_app.models.ensemble import Ensemble
from lightning_app.models.ensemble_names import ensemble_name, family
from lightning_app.models.ensemble_names import members as member_names
from lightning_app.training.calibration import fit_and_store, operating_point_line
from lightning_app.training.callbacks import TestReport
from lightning_app.training.recorded import SAME_TASK, split_differences, trained_on
from lightning_app.training.runs import (
    CHECKPOINTS,
    NoCheckpointError,
    newest_checkpoint,
    next_run_dir,
    run_dir_of,
)

#: Hyper-parameters every member must share (the seed, the recipe and the width may differ).
SHARED = SAME_TASK
CHECKPOINT = "best-ensemble.ckpt"


def member_checkpoints(roots: Sequence[Path]) -> list[Path]:
    """The newest best checkpoint under each root (a run directory or a folder of runs)."""
    if len(roots) < 2:
        raise ValueError("an ensemble needs at least two members")
    try:
        return [newest_checkpoint(root, "best") for root in roots]
    except NoCheckpointError as exc:
        raise ValueError(str(exc)) from None


def assemble(members: Sequence[Classifier], *, threshold: float | None, source: str | None) -> Classifier:
    """One Classifier over the members' Ensemble (the members' networks are moved into it)."""
    first = dict(members[0].hparams)
    for other in members[1:]:
        differ = [k for k in SHARED if other.hparams.get(k) != first.get(k)]
        if differ:
            raise ValueError(f"ensemble members differ in {', '.join(differ)}: they must share one task")
    backbones = [str(m.hparams["backbone"]) for m in members]
    if len({family(b) for b in backbones}) > 1:
        raise ValueError(f"ensemble members differ in architecture ({', '.join(backbones)}): one family only")
    hp: dict[str, Any] = {
        **first,
        "backbone": ensemble_name(backbones),
        "operating_threshold": threshold,
        "operating_source": source if threshold is not None else None,
    }
    model = Classifier(**hp)  # an empty ensemble of the same shape: what export and serving rebuild
    net = Ensemble.assemble(
        [m.net for m in members], [float(cast(torch.Tensor, m.temperature)) for m in members]
    )
    model.net.load_state_dict(net.state_dict())
    return model.eval()


def save(model: Classifier, path: Path, *, datamodule: dict[str, Any], members: list[Path]) -> None:
    """A Lightning checkpoint of ``model`` that ``load_from_checkpoint`` and ``make mar`` read."""
    state = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "datamodule_hyper_parameters": datamodule,
        "pytorch-lightning_version": L.__version__,
        "ensemble_members": [str(m) for m in members],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def member_config(checkpoint: Path) -> str:
    """The config file(s) a member was trained with, as its test report names them."""
    run_dir = run_dir_of(checkpoint)
    metrics = run_dir / "metrics.json" if run_dir else None
    if metrics is None or not metrics.is_file():
        return "the members' config"
    return str(json.loads(metrics.read_text()).get("config") or "the members' config")


def recipes(paths: Sequence[Path], backbone: str = "") -> str:
    """The members' configs as a report names them: ``a.yaml x 3 seeds``, or each in order.

    Members of unlike widths trained from one config file (``make fit-ensemble`` overrides
    the backbone per seed) are named by the ensemble's ``backbone`` too.
    """
    configs = [member_config(p) for p in paths]
    label = f"{configs[0]} x {len(paths)} seeds" if len(set(configs)) == 1 else " + ".join(configs)
    unlike = len(set(member_names(backbone) or ())) > 1
    return f"{label}, backbones {backbone}" if unlike else label


def resolved_config(paths: Sequence[Path], model: Classifier) -> dict[str, Any]:
    """The first member's resolved ``config.yaml`` with the ensemble's model and every member's seed."""
    configs = []
    for path in paths:
        run_dir = run_dir_of(path)
        file = run_dir / "config.yaml" if run_dir else None
        configs.append(yaml.safe_load(file.read_text()) or {} if file and file.is_file() else {})
    config = dict(configs[0])
    keys = ("backbone", "operating_threshold", "operating_source")
    config["model"] = {**config.get("model", {}), **{k: model.hparams[k] for k in keys}}
    config["seed_everything"] = [c.get("seed_everything") for c in configs]
    config["ensemble_members"] = [str(p) for p in paths]
    return config


def run(
    roots: Sequence[Path], out: Path, *, threshold: float | None = None, source: str | None = None
) -> Path:
    """Assemble, calibrate (temperature 1, operating point) and test; returns the run directory."""
    paths = member_checkpoints(roots)
    records = [trained_on(p) for p in paths]
    datamodule_hp = records[0]
    if not datamodule_hp:
        raise ValueError(f"{paths[0]} records no DataModule: train the members with the CLI (make fit)")
    for path, record in zip(paths[1:], records[1:], strict=True):
        if differ := split_differences(datamodule_hp, record):
            raise ValueError(f"{path} was trained on another split ({', '.join(differ)}) than {paths[0]}")
    members = [Classifier.load_from_checkpoint(p, map_location="cpu") for p in paths]
    model = assemble(members, threshold=threshold, source=source)
    run_dir = next_run_dir(out)
    try:
        report = _calibrate_and_test(model, run_dir, datamodule_hp, paths)
    except BaseException:  # no half-made run: `make mar` would pick its checkpoint up
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    print(f"members:    {', '.join(str(p) for p in paths)}")
    print(f"run dir:    {run_dir}\ncheckpoint: {run_dir / CHECKPOINTS / CHECKPOINT}")
    print(f"metrics:    {run_dir / 'metrics.json'}")
    test = report.metrics.get("metrics", {})
    accuracy, auroc = test.get("test/acc", math.nan), test.get("test/auroc", math.nan)
    print(f"test:       accuracy {accuracy:.1%}, AUROC {auroc:.3f}")
    print(operating_point_line(report.metrics))
    return run_dir


def _calibrate_and_test(
    model: Classifier, run_dir: Path, datamodule_hp: dict[str, Any], paths: list[Path]
) -> TestReport:
    checkpoint = run_dir / CHECKPOINTS / CHECKPOINT
    save(model, checkpoint, datamodule=datamodule_hp, members=paths)
    write_text(run_dir / "config.yaml", yaml.safe_dump(resolved_config(paths, model), sort_keys=False))
    datamodule = ImageFolderDataModule(**datamodule_hp)
    datamodule.setup("validate")
    info = fit_and_store(model, datamodule.val_dataloader(), str(checkpoint), temperature=1.0)
    model.calibration_info = info
    report = TestReport(f"{recipes(paths, str(model.hparams['backbone']))} (make fit-ensemble)")
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=str(run_dir),
        callbacks=[report],
    )
    trainer.test(model, datamodule=datamodule, ckpt_path=str(checkpoint), verbose=False)
    return report


def main(argv: list[str] | None = None) -> int:
    """CLI: one-line errors, exit code 2."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_app.training.assemble", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "members", type=Path, nargs="+", help="a run directory (or a folder of runs) per member"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("runs/ensemble"), help="where the ensemble's run goes"
    )
    parser.add_argument("--threshold", type=float, help="screening threshold (default: chosen on validation)")
    parser.add_argument(
        "--threshold-source", default="out-of-fold (make cv of the ensemble)", help="where it was chosen"
    )
    args = parser.parse_args(argv)
    try:
        run(args.members, args.out, threshold=args.threshold, source=args.threshold_source)
    except (OSError, ValueError, UserError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
