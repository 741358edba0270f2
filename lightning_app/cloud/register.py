"""``make register [RUN_DIR=runs/ensemble/version_N]``: a new registry version, alias ``candidate``.

    python -m lightning_app.cloud.register [--run RUN_DIR] [--mar model_store/brain_mri.mar]

Uploads to ``gs://$BUCKET/registry/brain_mri/vN/`` (:mod:`lightning_app.cloud.registry`) the
``.mar`` of ``make mar``, the run's ``metrics.json``, its model card (rendered from the run),
the golden scans, and a ``record.json`` with the data version (the run's, and the md5 that
``data.dvc`` names), the git commit, the archive's parity and OOD numbers and the golden
scans' answers computed from the archive now. Then it moves ``candidate`` to ``vN`` and logs
the same version as a W&B ``model`` artifact (:mod:`lightning_app.cloud.wandb_view`).
Errors are one line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning_app.cloud.golden import golden_scans, record_answers
from lightning_app.cloud.registry import Registry, RegistryError
from lightning_app.cloud.settings import CloudSettings
from lightning_app.cloud.wandb_view import COLLECTION, ModelView, WandbModelView
from lightning_app.errors import UserError
from lightning_app.inference.artefacts import META, MODEL_NAME
from lightning_app.training.runinfo import git_commit, wandb_mode

REPO = Path(__file__).resolve().parents[2]


def dvc_md5(dvc_file: Path) -> str | None:
    """The ``md5`` that a ``.dvc`` file names for its output (``None`` without one)."""
    if not dvc_file.is_file():
        return None
    match = re.search(r"^\s*-?\s*md5:\s*(\S+)", dvc_file.read_text(), re.MULTILINE)
    return match.group(1) if match else None


def archive_meta(mar: Path) -> dict[str, Any]:
    """The ``model_meta.json`` and manifest version of a ``.mar`` (one-line error otherwise)."""
    try:
        with zipfile.ZipFile(mar) as archive:
            manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))["model"]
            meta = dict(json.loads(archive.read(META)))
    except (OSError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise RegistryError(
            f"{mar} is not a model archive of make mar: {type(exc).__name__}: {exc}"
        ) from None
    if manifest.get("modelName") != MODEL_NAME:
        raise RegistryError(f"{mar} archives model {manifest.get('modelName')!r}, expected {MODEL_NAME!r}")
    return meta


def build_record(run: Path, mar: Path, scans: dict[str, bytes], dvc_file: Path) -> dict[str, Any]:
    """What ``record.json`` says of a version (before the registry adds its number and files)."""
    metrics = json.loads((run / "metrics.json").read_text())
    meta = archive_meta(mar)
    return {
        "model": MODEL_NAME,
        "model_version": meta.get("version"),
        "run_dir": str(run),
        "git_commit": metrics.get("git_commit") or git_commit(REPO),
        "registered_from_commit": git_commit(REPO),
        "data_version": metrics.get("data_version", "unknown"),
        "data_dvc_md5": dvc_md5(dvc_file),
        "metrics": metrics.get("metrics", {}),
        "backend": meta.get("backend", {}),
        "ood": {k: v for k, v in meta.get("ood", {}).items() if not isinstance(v, (list, dict))},
        "golden": record_answers(mar, scans),
    }


def model_card(run: Path, out: Path) -> Path:
    """The run's model card rendered to ``out``."""
    from lightning_app.training.model_card import render

    try:
        out.write_text(render(run))
    except (OSError, KeyError, ValueError) as exc:
        raise RegistryError(f"cannot render the model card of {run}: {type(exc).__name__}: {exc}") from None
    return out


def register(
    run: Path, mar: Path, registry: Registry, view: ModelView | None, dvc_file: Path, per_class: int = 3
) -> str:
    """Publish ``run`` + ``mar`` as a new version, move ``candidate`` to it, show it in ``view``."""
    if not (run / "metrics.json").is_file():
        raise RegistryError(f"no metrics.json in {run}: run 'make fit' first")
    if not mar.is_file():
        raise RegistryError(f"no archive at {mar}: run 'make mar' first")
    scans = golden_scans(per_class)
    with tempfile.TemporaryDirectory(prefix="register-") as tmp:
        folder = Path(tmp)
        files = {f"{MODEL_NAME}.mar": mar, "metrics.json": run / "metrics.json"}
        files["model_card.md"] = model_card(run, folder / "model_card.md")
        (folder / "golden").mkdir()
        for name, data in scans.items():
            (folder / "golden" / name).write_bytes(data)
            files[f"golden/{name}"] = folder / "golden" / name
        record = build_record(run, mar, scans, dvc_file)
        version = registry.publish(files, record)
        candidate = registry.alias("candidate")
        registry.move_alias("candidate", version, expected=candidate, by="make register")
        print(f"registered {version}: {registry.uri(version)}/ (candidate -> {version})")
        if view is not None:
            shown = {k: v for k, v in files.items() if not k.startswith("golden/")}
            metadata = {k: record[k] for k in ("git_commit", "data_version", "data_dvc_md5", "metrics")}
            try:
                print(f"W&B:       {view.log_version(version, shown, metadata, run)}")
            except Exception as exc:  # W&B is the view; the GCS record above already stands
                print(f"warning: {version} not shown in W&B: {type(exc).__name__}: {exc}", file=sys.stderr)
    return version


def main(
    argv: list[str] | None = None, env: Mapping[str, str] | None = None, view: ModelView | None = None
) -> int:
    """Parse, read the settings once, register; one-line errors (exit 2)."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_app.cloud.register", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--run", type=Path, help="run directory (default: the newest under runs/ensemble, the served default)"
    )
    parser.add_argument("--mar", type=Path, default=Path("model_store") / f"{MODEL_NAME}.mar")
    parser.add_argument("--dvc-file", type=Path, default=REPO / "data.dvc")
    parser.add_argument("--golden-per-class", type=int, default=3)
    parser.add_argument("--no-wandb", action="store_true", help="register in GCS only")
    args = parser.parse_args(argv)
    env = os.environ if env is None else env
    try:
        settings = CloudSettings.from_env(env, dry_run=False, bucket_only=True)
        if args.run is None:
            from lightning_app.training.model_card import newest_run

            args.run = newest_run(Path("runs/ensemble"))
        if view is None and not args.no_wandb:
            view = WandbModelView(
                settings.get("WANDB_PROJECT", "brain-mri"),
                settings.get("WANDB_REGISTRY", COLLECTION),
                wandb_mode(env),
            )
        registry = Registry.from_settings(settings)
        view = None if args.no_wandb else view
        register(args.run, args.mar, registry, view, args.dvc_file, args.golden_per_class)
    except (UserError, FileNotFoundError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
