"""Deploy one model archive: ``make deploy-model MAR_URI=gs://.../brain_mri.mar [DRY_RUN=1]``.

The archive is the one a training job published (``<AIP_MODEL_DIR>/brain_mri.mar``, see
:mod:`lightning_app.train_entry`). This command

1. fetches it to ``model_store/brain_mri.mar`` and checks that it is a TorchServe archive
   of the model :data:`~lightning_app.inference.artefacts.MODEL_NAME` (one-line errors);
2. prints its version: the ``version`` every ``/predictions`` response of the deployed
   service carries;
3. submits ``cloudbuild.yaml`` with ``_MAR_URI`` set to exactly that URI (Cloud Build's
   ``fetch-mar`` step copies it into the serving image), or, with ``DRY_RUN=1``, prints
   the ``gcloud`` command. ``PROJECT``/``REGION`` and other substitutions as in
   ``cloudbuild.yaml``; ``COMMIT_SHA`` defaults to the checked-out commit.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from lightning_app.cloud.gcs import fetch
from lightning_app.errors import UserError
from lightning_app.inference.artefacts import MODEL_NAME
from lightning_app.training.runinfo import git_commit

REPO = Path(__file__).resolve().parents[2]


def mar_version(mar: Path) -> str:
    """The model version recorded in a ``.mar`` (its ``MAR-INF/MANIFEST.json``)."""
    try:
        with zipfile.ZipFile(mar) as archive:
            manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
        model = manifest["model"]
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise UserError(f"{mar} is not a TorchServe model archive: {type(exc).__name__}: {exc}") from None
    if model.get("modelName") != MODEL_NAME:
        raise UserError(f"{mar} archives model {model.get('modelName')!r}, expected {MODEL_NAME!r}")
    return str(model.get("modelVersion", ""))


def gcloud_command(mar_uri: str, commit: str, substitutions: list[str]) -> list[str]:
    """``gcloud builds submit`` of ``cloudbuild.yaml`` serving ``mar_uri``."""
    subs = ",".join([f"_MAR_URI={mar_uri}", f"COMMIT_SHA={commit}", *substitutions])
    return ["gcloud", "builds", "submit", "--config", "cloudbuild.yaml", f"--substitutions={subs}", "."]


def main(argv: list[str] | None = None) -> int:
    """Fetch, check, print the version, submit (or print with ``--dry-run``)."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_app.cloud.deploy_model", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--mar-uri", required=True, help="gs://.../brain_mri.mar (or a local path)")
    parser.add_argument("--out", type=Path, default=Path("model_store") / f"{MODEL_NAME}.mar")
    parser.add_argument(
        "--substitution", action="append", default=[], help="extra _KEY=VALUE for Cloud Build"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the gcloud command, submit nothing")
    args = parser.parse_args(argv)
    try:
        mar = args.out
        mar.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=mar.parent, prefix=".deploy-") as tmp:
            fetched = fetch(args.mar_uri, Path(tmp) / mar.name)
            version = mar_version(fetched)  # a bad archive never replaces the one in place
            os.replace(fetched, mar)
        commit = git_commit(REPO).split("+")[0]
        command = gcloud_command(args.mar_uri, commit, args.substitution)
        print(f"archive:    {args.mar_uri} -> {mar}\nversion:    {version}")
        if args.dry_run:
            print(shlex.join(command))
            return 0
        if shutil.which("gcloud") is None:
            raise UserError("gcloud not found: install the Google Cloud CLI, or pass DRY_RUN=1")
        return subprocess.run(command, cwd=REPO, check=False).returncode
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
