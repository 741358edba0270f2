"""Render a Vertex AI custom-job spec for a training config, and submit it with gcloud.

``make vertex-train CONFIG=configs/default.yaml [SPEC=configs/vertex/ddp.yaml] [DRY_RUN=1]``
runs ``python -m lightning_app.cloud.vertex``. The spec templates in ``configs/vertex/`` hold
``${NAME}`` placeholders, filled from these environment variables (the shared ones through
:class:`~lightning_app.cloud.settings.CloudSettings`; an empty value counts as unset):

| variable           | default                                                       |
|--------------------|---------------------------------------------------------------|
| ``PROJECT``        | ``GOOGLE_CLOUD_PROJECT``; required to submit (``project-id`` in a dry run) |
| ``REGION``         | ``us-central1``                                               |
| ``REPO``           | ``brain-mri`` (Artifact Registry repository)                  |
| ``IMAGE_TAG``      | ``latest``                                                    |
| ``IMAGE_URI``      | ``${REGION}-docker.pkg.dev/${PROJECT}/${REPO}/train:${IMAGE_TAG}`` |
| ``BUCKET``         | ``gs://${PROJECT}-brain-mri``                                 |
| ``DATA_DIR``       | ``${BUCKET}/data/br35h`` (a prepared data folder, read via ``/gcs/``) |
| ``OUTPUT_URI``     | ``${BUCKET}/vertex/${DISPLAY_NAME}`` (Vertex's ``AIP_*`` dirs) |
| ``MACHINE_TYPE``   | ``n1-standard-8``                                             |
| ``ACCELERATOR_TYPE`` | ``NVIDIA_TESLA_T4`` (DDP spec)                              |
| ``REPLICAS``       | ``2`` (DDP spec: machines in total)                           |
| ``WANDB_SECRET``   | ``projects/${PROJECT}/secrets/wandb-api-key/versions/latest`` |
| ``DISPLAY_NAME``   | ``brain-mri-<config name>-<UTC time>``                        |
| ``SERVICE_ACCOUNT`` | unset: Vertex's default service agent                        |

The config is passed by its path inside the train image (it is built from the repo), so
it must be a file under ``configs/``. Nothing here imports torch or Lightning.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import Any

import yaml

from lightning_app.cloud.settings import CloudSettings, CloudSettingsError

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SPEC = "configs/vertex/single.yaml"


class _NoAliases(yaml.SafeDumper):
    """Write repeated worker pools out in full (gcloud users read the printed spec)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


class VertexError(ValueError):
    """A setting that cannot make a valid job (one line for the user)."""


def repo_relative(config: Path, repo: Path = REPO) -> str:
    """``config`` as a path under ``repo/configs`` (how the train image sees it)."""
    resolved = (config if config.is_absolute() else Path.cwd() / config).resolve()
    if not resolved.is_file():
        raise VertexError(f"config file not found: {config}")
    try:
        relative = resolved.relative_to(repo)
    except ValueError:
        raise VertexError(
            f"config must be a file under {repo / 'configs'} (it is baked into the image)"
        ) from None
    if relative.parts[0] != "configs":
        raise VertexError(
            f"config must be a file under configs/ (it is baked into the image), got {relative}"
        )
    return relative.as_posix()


def settings(config: str, cloud: CloudSettings) -> dict[str, str]:
    """Every placeholder's value, from ``cloud`` and the defaults in the module docstring."""
    project = cloud.project
    s = {"PROJECT": project, "CONFIG": config, "REGION": cloud.region, "REPO": cloud.repo}
    s["IMAGE_TAG"] = cloud.image_tag
    s["IMAGE_URI"] = cloud.image_uri
    s["BUCKET"] = cloud.bucket
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    s["DISPLAY_NAME"] = cloud.get("DISPLAY_NAME", f"brain-mri-{Path(config).stem}-{stamp}")
    data = cloud.get("DATA_DIR", f"{s['BUCKET']}/data/br35h")
    s["DATA_DIR"] = "/gcs/" + data[len("gs://") :] if data.startswith("gs://") else data
    s["OUTPUT_URI"] = cloud.get("OUTPUT_URI", f"{s['BUCKET']}/vertex/{s['DISPLAY_NAME']}")
    s["MACHINE_TYPE"] = cloud.get("MACHINE_TYPE", "n1-standard-8")
    s["ACCELERATOR_TYPE"] = cloud.get("ACCELERATOR_TYPE", "NVIDIA_TESLA_T4")
    s["WANDB_SECRET"] = cloud.get("WANDB_SECRET", f"projects/{project}/secrets/wandb-api-key/versions/latest")
    if not s["OUTPUT_URI"].startswith("gs://"):
        raise VertexError(f"OUTPUT_URI must be a gs:// URI, got {s['OUTPUT_URI']!r}")
    return s


def render(
    template: Path, values: Mapping[str, str], *, replicas: int | None = None, service_account: str = ""
) -> Any:
    """Fill ``template``'s placeholders and return the job spec as plain data."""
    try:
        text = Template(template.read_text()).substitute(values)
    except KeyError as exc:
        raise VertexError(f"{template}: no value for placeholder {exc}") from None
    except OSError as exc:
        raise VertexError(f"cannot read spec template {template}: {exc.strerror}") from None
    spec = yaml.safe_load(text)
    pools = spec.get("workerPoolSpecs") if isinstance(spec, dict) else None
    if not pools:
        raise VertexError(f"{template}: no workerPoolSpecs")
    if len(pools) > 1:
        if replicas is None or replicas < 2:
            raise VertexError(
                f"{template} is a multi-replica spec: REPLICAS must be 2 or more, got {replicas}"
            )
        spec["workerPoolSpecs"] = [pools[0], {**pools[1], "replicaCount": replicas - 1}, *pools[2:]]
    elif replicas not in (None, 1):
        raise VertexError(f"{template} has one replica; use configs/vertex/ddp.yaml for REPLICAS={replicas}")
    if service_account:
        spec["serviceAccount"] = service_account
    return spec


def gcloud_command(values: Mapping[str, str], spec_file: Path) -> list[str]:
    """Return the exact ``gcloud ai custom-jobs create`` call for ``spec_file``."""
    return [
        "gcloud", "ai", "custom-jobs", "create",
        f"--project={values['PROJECT']}",
        f"--region={values['REGION']}",
        f"--display-name={values['DISPLAY_NAME']}",
        f"--config={spec_file}",
    ]  # fmt: skip


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Render (and unless dry-run, submit) the job; errors are one line and exit code 2."""
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="python -m lightning_app.cloud.vertex", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config", type=Path, required=True, help="training config under configs/")
    parser.add_argument("--spec", type=Path, default=Path(env.get("SPEC") or REPO / DEFAULT_SPEC))
    parser.add_argument("--replicas", type=int, default=int(env["REPLICAS"]) if env.get("REPLICAS") else None)
    parser.add_argument(
        "--out", type=Path, default=Path("runs/vertex"), help="where the rendered spec is written"
    )
    parser.add_argument("--dry-run", action="store_true", default=env.get("DRY_RUN", "") not in ("", "0"))
    args = parser.parse_args(argv)
    try:
        config = repo_relative(args.config)
        cloud = CloudSettings.from_env(env, dry_run=args.dry_run)
        values = settings(config, cloud)
        replicas = args.replicas if args.replicas is not None else (2 if "ddp" in args.spec.name else None)
        spec = render(args.spec, values, replicas=replicas, service_account=cloud.service_account)
    except (VertexError, CloudSettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    spec_file = args.out / f"{values['DISPLAY_NAME']}.yaml"
    spec_file.write_text(yaml.dump(spec, Dumper=_NoAliases, sort_keys=False))
    command = gcloud_command(values, spec_file)
    if args.dry_run:
        print(f"# {spec_file}")
        print(spec_file.read_text(), end="")
        print("# submit with:")
        print(shlex.join(command))
        return 0
    if shutil.which("gcloud") is None:
        print(
            "error: gcloud not found: install the Google Cloud CLI, or use DRY_RUN=1 to print the job",
            file=sys.stderr,
        )
        return 2
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
