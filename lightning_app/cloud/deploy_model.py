"""Deploy a registry version: ``make deploy-model [ALIAS=production | VERSION=vN] [DRY_RUN=1]``.

    python -m lightning_app.cloud.deploy_model [--alias production | --version vN] [--dry-run]

The archive comes from the model registry only (:mod:`lightning_app.cloud.registry`, read
through :func:`~lightning_app.cloud.registry.resolve`, as the drift job and the UI read it),
never from a bare ``gs://`` URI. This command

1. resolves the alias (default ``production``) or the version; only a version that holds
   ``staging`` or ``production`` (it passed ``make promote``'s gates) is deployed;
2. fetches its archive to ``model_store/brain_mri.mar``, checked against the sha256 the
   registry recorded and as a TorchServe archive of
   :data:`~lightning_app.inference.artefacts.MODEL_NAME` (one-line errors; a refused archive
   replaces nothing);
3. prints the registry version and the model version: the ``version`` every
   ``/predictions`` response of the deployed service carries;
4. submits ``cloudbuild.yaml`` with ``_MAR_URI`` set to the version's archive in the registry,
   and ``_REGISTRY``/``_REGISTRY_ALIAS`` for the UI (which shows the version its alias names),
   through :class:`~lightning_app.cloud.cloud_run.CloudRun`; with ``DRY_RUN=1`` the
   ``gcloud`` command is printed. ``PROJECT``, ``BUCKET``/``REGISTRY`` as in
   :mod:`lightning_app.cloud.settings`; ``COMMIT_SHA`` is the checked-out commit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

from lightning_app.cloud.cloud_run import CloudRun
from lightning_app.cloud.registry import Registry, RegistryError, Resolved, resolve
from lightning_app.cloud.settings import CloudSettings
from lightning_app.errors import UserError
from lightning_app.inference.artefacts import MODEL_NAME
from lightning_app.training.runinfo import git_commit

REPO = Path(__file__).resolve().parents[2]
DEPLOYABLE = ("production", "staging")
BUILD_TIMEOUT_S = 3900  # cloudbuild.yaml's own timeout (3600 s) and the upload


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


def deployable(target: Resolved) -> str:
    """The alias the deployed UI follows: ``target``'s own, else the one holding its version."""
    if target.alias:
        if target.alias not in DEPLOYABLE:
            raise RegistryError(f"deploy takes ALIAS=production or ALIAS=staging, not {target.alias}")
        return target.alias
    held = target.registry.aliases_of(target.version)
    for alias in DEPLOYABLE:
        if alias in held:
            return alias
    raise RegistryError(
        f"{target.name} is neither staging nor production: make promote VERSION={target.version} first"
    )


def substitutions(target: Resolved, alias: str, commit: str, extra: list[str]) -> str:
    """Cloud Build's ``--substitutions`` value for deploying ``target``."""
    pairs = [
        f"_MAR_URI={target.mar_uri}",
        f"_REGISTRY={target.registry.root}",
        f"_REGISTRY_ALIAS={alias}",
        f"COMMIT_SHA={commit}",
    ]
    return ",".join([*pairs, *extra])


def deploy(target: Resolved, out: Path, cloud_run: CloudRun, extra: list[str]) -> None:
    """Fetch and check ``target``'s archive into ``out``, then submit (or print) the build."""
    alias = deployable(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".deploy-") as tmp:
        fetched = target.fetch_mar(Path(tmp) / out.name)
        version = mar_version(fetched)  # a bad archive never replaces the one in place
        os.replace(fetched, out)
    print(f"registry:   {target.registry.root} {target.name}")
    print(f"archive:    {target.mar_uri} -> {out}\nversion:    {version}")
    subs = substitutions(target, alias, git_commit(REPO).split("+")[0], extra)
    cloud_run.gcloud(
        "builds", "submit", "--config=cloudbuild.yaml", f"--substitutions={subs}", ".",
        timeout_s=BUILD_TIMEOUT_S,
    )  # fmt: skip


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Parse, read the settings once, resolve, deploy; one-line errors (exit 2)."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_app.cloud.deploy_model", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--alias", default="", help="production (the default) or staging")
    parser.add_argument("--version", default="", help="a version holding staging or production, e.g. v3")
    parser.add_argument("--out", type=Path, default=Path("model_store") / f"{MODEL_NAME}.mar")
    parser.add_argument(
        "--substitution", action="append", default=[], help="extra _KEY=VALUE for Cloud Build"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the gcloud command, submit nothing")
    args = parser.parse_args(argv)
    try:
        settings = CloudSettings.from_env(os.environ if env is None else env, dry_run=args.dry_run)
        registry = Registry.from_settings(settings)
        alias = args.alias or ("" if args.version else "production")
        target = resolve(registry, alias=alias, version=args.version)
        cloud_run = CloudRun(settings, settings.get("SERVICE", "brain-mri-serve"))
        deploy(target, args.out, cloud_run, args.substitution)
    except UserError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
