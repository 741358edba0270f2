"""Checkpoint -> what the TorchServe ``.mar`` carries, and the ``.mar`` itself.

A Lightning ``.ckpt`` (a pickle of the whole training state) never goes into the archive.
Export writes three small files that TorchServe loads under ``weights_only=True``:

* ``state_dict.pt`` — the plain ``state_dict`` of the backbone (``Classifier.net``),
* ``index_to_name.json`` — ``{"0": "no_tumor", "1": "tumor"}``, from the checkpoint,
* ``model_meta.json`` — backbone, ``num_classes``, ``in_channels``, preprocessing, class names
  and a version (the checkpoint's sha256): everything the handler needs to rebuild the network.

Then the export steps (:data:`STEPS`) run with an :class:`ExportContext`: each may read the
data's splits (``--data``, default the checkpoint's ``data_dir``), write more artefacts (names
in :mod:`lightning_app.inference.artefacts`) and record what it measured in the meta.

``python -m lightning_app.export --ckpt runs/.../best-*.ckpt --out model_store`` (``make mar``)
archives it with ``serve/handler.py`` and ``serve/model-config.yaml`` as ``brain_mri.mar``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import torch

from lightning_app.data import manifest
from lightning_app.data.atomic import file_digest
from lightning_app.export.cascade import cascade_step
from lightning_app.export.context import ExportContext, Exported, ExportError, ExportStep
from lightning_app.export.ood import fit_ood
from lightning_app.export.precision import precision_step
from lightning_app.export.reference import reference_step
from lightning_app.inference.artefacts import FORMAT_VERSION, INDEX_TO_NAME, META, MODEL_NAME, WEIGHTS
from lightning_app.inference.cascade import CascadeRule
from lightning_app.training.recorded import trained_on

REPO = Path(__file__).resolve().parents[2]

#: Steps run after the weights are written, in order. Each adds artefacts/metadata.
STEPS: list[ExportStep] = [
    precision_step,  # the served precision's artefact, through its parity gate
    cascade_step,  # an ensemble's first member beside it, when asked (a cascade), through its gate
    fit_ood,  # OOD guard on the served backend's features (after precision_step: it reads that backend)
    reference_step,  # monitoring: PCA basis + train/val reference profile (keep it last: it profiles answers)
]


def newest_best_checkpoint(root: Path) -> Path:
    """Return the most recently written ``best-*.ckpt`` of the runs under ``root`` (any depth)."""
    from lightning_app.training.runs import NoCheckpointError, newest_checkpoint

    try:
        return newest_checkpoint(root, "best")
    except NoCheckpointError as exc:
        raise ExportError(str(exc)) from None


def export(
    checkpoint: Path,
    out_dir: Path,
    *,
    data_dir: Path | None = None,
    steps: list[ExportStep] | None = None,
    options: dict[str, Any] | None = None,
) -> Exported:
    """Write the backbone ``state_dict``, ``index_to_name.json`` and metadata to ``out_dir``.

    Then run the export ``steps`` (default :data:`STEPS`) with the training data at
    ``data_dir``; the metadata is written last, so it holds what the steps measured.
    """
    if not checkpoint.is_file():
        raise ExportError(f"checkpoint not found: {checkpoint}")
    from lightning_app.models.classifier import Classifier

    try:
        model = Classifier.load_from_checkpoint(checkpoint, map_location="cpu")
    except Exception as exc:  # a corrupt or foreign file: one line for the user
        raise ExportError(f"cannot load checkpoint {checkpoint}: {type(exc).__name__}: {exc}") from None
    hp = model.hparams
    class_names = [str(name) for name in model.class_names]
    preprocessing = dict(hp.get("preprocessing") or {})
    if not preprocessing:
        from lightning_app.transforms import Preprocessing

        preprocessing = Preprocessing().as_dict()
    # Contiguous (NCHW) tensors: the handler picks its own memory format at load time.
    state = {k: v.detach().contiguous() for k, v in model.net.state_dict().items()}
    metadata: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "version": file_digest(checkpoint)[:12],
        "backbone": hp["backbone"],
        "num_classes": int(hp["num_classes"]),
        "in_channels": int(hp.get("in_channels", 1)),
        "class_names": class_names,
        "preprocessing": preprocessing,
        "temperature": float(cast(torch.Tensor, model.temperature)),  # fitted on validation logits after fit
        # the screening operating point chosen with it (None: the classes have no negative class)
        "operating_point": getattr(model, "operating_point", None),
        "checkpoint": checkpoint.name,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if data_dir is not None:
        check_data(data_dir, class_names, trained_on(checkpoint))
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS
    torch.save(state, weights)
    index = out_dir / INDEX_TO_NAME
    index.write_text(json.dumps({str(i): name for i, name in enumerate(class_names)}, indent=2) + "\n")
    context = ExportContext(
        net=model.net.eval(),
        metadata=metadata,
        out_dir=out_dir,
        checkpoint=checkpoint,
        data_dir=data_dir,
        options=dict(options or {}),
    )
    for step in STEPS if steps is None else steps:
        step(context)
    meta = out_dir / META
    meta.write_text(json.dumps(metadata, indent=2) + "\n")
    return Exported(
        weights=weights, index_to_name=index, meta=meta, metadata=metadata, extra=tuple(context.files)
    )


def archive(
    exported: Exported,
    export_path: Path,
    *,
    model_name: str = MODEL_NAME,
    handler: Path = REPO / "serve" / "handler.py",
    model_config: Path = REPO / "serve" / "model-config.yaml",
) -> Path:
    """Pack the exported files into ``export_path/<model_name>.mar`` (atomically replaced)."""
    export_path.mkdir(parents=True, exist_ok=True)
    extra = ",".join(str(p) for p in (exported.index_to_name, exported.meta, *exported.extra))
    with tempfile.TemporaryDirectory(dir=export_path, prefix=".mar-") as tmp:
        cmd = [
            str(Path(sys.executable).with_name("torch-model-archiver")),
            "--model-name", model_name,
            "--version", str(exported.metadata["version"]),
            "--serialized-file", str(exported.weights),
            "--handler", str(handler),
            "--extra-files", extra,
            "--config-file", str(model_config),
            "--export-path", tmp,
        ]  # fmt: skip
        # The archiver stages in $TMPDIR/<model_name>, wiping it first: each build its own TMPDIR.
        env = {**os.environ, "TMPDIR": tmp}
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300, env=env)
        built = Path(tmp) / f"{model_name}.mar"
        if result.returncode != 0 or not built.is_file():
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise ExportError(f"torch-model-archiver failed: {lines[-1] if lines else result.returncode}")
        target = export_path / f"{model_name}.mar"
        os.replace(built, target)
    return target


def build_mar(
    checkpoint: Path,
    export_path: Path,
    *,
    model_name: str = MODEL_NAME,
    data_dir: Path | None = None,
    precision: str | None = None,
    pca_dim: int | None = None,
    cascade: CascadeRule | None = None,
    cascade_fallback: bool = False,
) -> Path:
    """Export ``checkpoint`` and archive it: the one call behind ``make mar``.

    ``precision`` (``fp32``, ``onnx-fp32``, ``int8``; default: the measured winner when
    ``data_dir`` is given) picks the served backend (:mod:`lightning_app.export.precision`);
    ``pca_dim`` the embedding's components (default 16, :mod:`lightning_app.export.reference`);
    ``cascade`` serves an ensemble as a cascade (:mod:`lightning_app.export.cascade`); with
    ``cascade_fallback`` the whole ensemble instead, if the cascade's gate refuses it.
    """
    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        chosen = {
            "precision": precision,
            "pca_dim": pca_dim,
            "cascade": cascade,
            "cascade_fallback": cascade_fallback or None,
        }
        options = {k: v for k, v in chosen.items() if v is not None}
        exported = export(checkpoint, Path(tmp), data_dir=data_dir, options=options)
        return archive(exported, export_path, model_name=model_name)


def mar_meta(mar: Path) -> dict[str, Any]:
    """The ``model_meta.json`` inside ``mar``."""
    import zipfile

    with zipfile.ZipFile(mar) as archive_file:
        return dict(json.loads(archive_file.read(META)))


def training_data_dir(checkpoint: Path) -> Path | None:
    """The prepared data root a checkpoint was trained on, if it is still on disk."""
    raw = trained_on(checkpoint).get("data_dir")
    return Path(raw) if raw and manifest.has_manifest(Path(raw)) else None


def check_data(data_dir: Path, class_names: list[str], datamodule: Mapping[str, Any]) -> None:
    """Refuse (one line) a prepared root whose classes are not the ones the checkpoint was trained on.

    Export steps index the root's labels by sorted folder name, as the DataModule did: another
    data set (e.g. ``data/br35h`` after a fit on your own folder) would fit the OOD guard and
    judge the parity gate on the wrong classes. A checkpoint without a DataModule record is
    checked by the number of classes only.
    """
    try:
        labels = sorted({row.label for row in manifest.read(manifest.path_of(data_dir))})
    except (OSError, ValueError) as exc:
        raise ExportError(f"--data {data_dir}: not a prepared data folder ({exc})") from None
    mapping = datamodule.get("class_map") or {}
    named = [mapping.get(label, label) for label in labels]
    if (named != class_names) if datamodule else (len(labels) != len(class_names)):
        trained = datamodule.get("data_dir", "its training folder")
        raise ExportError(
            f"--data {data_dir} holds classes {', '.join(labels)}, but the checkpoint was trained on "
            f"{', '.join(class_names)} ({trained}): pass that folder (make mar DATA={trained}) or omit --data"
        )
