"""Render, check and apply the monitoring specs in ``configs/monitoring/`` with gcloud.

``make monitoring-deploy [DRY_RUN=1]`` runs ``python -m lightning_app.cloud.deploy_monitoring``.
The files hold ``${NAME}`` placeholders, filled from these environment variables (the shared
ones through :class:`~lightning_app.cloud.settings.CloudSettings`; an empty value counts as
unset); each rendered file is checked against its schema in ``configs/monitoring/schemas``
and written under ``--out`` (``reports/monitoring``), then the gcloud commands are printed
(``DRY_RUN=1``) or run in order:

| variable | default |
|---|---|
| ``PROJECT`` | ``GOOGLE_CLOUD_PROJECT``; required unless dry run (``project-id``) |
| ``REGION`` | ``us-central1`` |
| ``SERVICE`` | ``brain-mri-serve`` (the Cloud Run service of cloudbuild.yaml) |
| ``DRIFT_JOB`` | ``brain-mri-drift`` |
| ``BUCKET`` | ``gs://${PROJECT}-brain-mri`` |
| ``LOG_BUCKET`` | ``${PROJECT}-brain-mri-logs`` (bucket name of the log sink) |
| ``REPORT_URI`` | ``${BUCKET}/drift`` |
| ``REGISTRY`` | ``${BUCKET}/registry/brain_mri`` (the model registry the drift job reads) |
| ``DRIFT_ALIAS`` | ``production`` (the registry alias whose model is the drift reference) |
| ``IMAGE_URI`` | ``${REGION}-docker.pkg.dev/${PROJECT}/${REPO}/train:${IMAGE_TAG}`` (the train image) |
| ``REPO``, ``IMAGE_TAG`` | ``brain-mri``, ``latest`` (as for the Vertex job) |
| ``SERVICE_ACCOUNT`` | ``brain-mri-monitor@${PROJECT}.iam.gserviceaccount.com`` |
| ``DRIFT_SCHEDULE`` | ``0 6 * * *`` (daily, 06:00 UTC) |
| ``NOTIFICATION_CHANNELS`` | empty (comma-separated ``projects/.../notificationChannels/ID``) |
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import yaml

from lightning_app.cloud.registry import Registry, check_alias
from lightning_app.cloud.settings import CloudSettings
from lightning_app.errors import UserError

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "configs" / "monitoring"


class DeployError(ValueError):
    """A setting or spec that cannot be deployed (one line for the user)."""


def settings(cloud: CloudSettings) -> dict[str, str]:
    """Placeholder values from ``cloud`` with their defaults."""
    project = cloud.project
    v = {"PROJECT": project, "REGION": cloud.region, "BUCKET": cloud.bucket, "IMAGE_URI": cloud.image_uri}
    v["SERVICE"] = cloud.get("SERVICE", "brain-mri-serve")
    v["DRIFT_JOB"] = cloud.get("DRIFT_JOB", "brain-mri-drift")
    v["LOG_BUCKET"] = cloud.get("LOG_BUCKET", f"{project}-brain-mri-logs").removeprefix("gs://").rstrip("/")
    v["REPORT_URI"] = cloud.get("REPORT_URI", f"{v['BUCKET']}/drift").rstrip("/")
    v["REGISTRY"] = Registry.from_settings(cloud).root
    v["DRIFT_ALIAS"] = check_alias(cloud.get("DRIFT_ALIAS", "production"))
    v["SERVICE_ACCOUNT"] = cloud.service_account or f"brain-mri-monitor@{project}.iam.gserviceaccount.com"
    v["DRIFT_SCHEDULE"] = cloud.get("DRIFT_SCHEDULE", "0 6 * * *")
    channels = [c.strip() for c in cloud.get("NOTIFICATION_CHANNELS").split(",") if c.strip()]
    v["NOTIFICATION_CHANNELS"] = json.dumps(channels)
    if not v["REPORT_URI"].startswith("gs://"):
        raise DeployError("REPORT_URI must be a gs:// URI")
    return v


@dataclass(frozen=True)
class Spec:
    """One rendered spec: its kind (schema name), source file and content."""

    kind: str
    source: Path
    content: dict[str, Any]


def render(path: Path, values: Mapping[str, str]) -> dict[str, Any]:
    """Fill the placeholders of one YAML spec and parse it."""
    try:
        text = Template(path.read_text()).substitute(values)
    except (KeyError, ValueError) as exc:
        raise DeployError(f"{path.name}: unknown or malformed placeholder {exc}") from None
    content = yaml.safe_load(text)
    if not isinstance(content, dict):
        raise DeployError(f"{path.name}: not a YAML mapping")
    return content


def specs(values: Mapping[str, str], root: Path = SPECS) -> list[Spec]:
    """Every spec, rendered: log sink, log-based metrics, alert policies, drift job, schedule."""
    files = [("log_sink", root / "log_sink.yaml")]
    files += [("log_metric", p) for p in sorted((root / "log_metrics").glob("*.yaml"))]
    files += [("alert_policy", p) for p in sorted((root / "alerts").glob("*.yaml"))]
    files += [("run_job", root / "drift_job.yaml"), ("scheduler_job", root / "drift_schedule.yaml")]
    return [Spec(kind, path, render(path, values)) for kind, path in files]


def check(spec: Spec, root: Path = SPECS) -> None:
    """Validate a rendered spec against its JSON schema (raises :class:`DeployError`)."""
    import jsonschema

    schema = json.loads((root / "schemas" / f"{spec.kind}.schema.json").read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(spec.content), key=str)
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(top)"
        raise DeployError(f"{spec.source.name}: {where}: {errors[0].message}")


def commands(rendered: list[tuple[Spec, Path]], values: Mapping[str, str]) -> list[list[str]]:
    """The gcloud commands that create everything, in order."""
    project = ["--project", values["PROJECT"]]
    out: list[list[str]] = []
    for spec, path in rendered:
        c = spec.content
        if spec.kind == "log_sink":
            out.append(["gcloud", "logging", "sinks", "create", c["name"], c["destination"],
                        f"--log-filter={c['filter']}",
                        f"--description={c.get('description', '')}", *project])  # fmt: skip
        elif spec.kind == "log_metric":
            out.append(
                ["gcloud", "logging", "metrics", "create", c["name"], f"--config-from-file={path}", *project]
            )
        elif spec.kind == "alert_policy":
            out.append(["gcloud", "monitoring", "policies", "create", f"--policy-from-file={path}", *project])
        elif spec.kind == "run_job":
            out.append(
                ["gcloud", "run", "jobs", "replace", str(path), f"--region={values['REGION']}", *project]
            )
        elif spec.kind == "scheduler_job":
            http, token = c["httpTarget"], c["httpTarget"]["oauthToken"]
            out.append(["gcloud", "scheduler", "jobs", "create", "http", c["name"].rsplit("/", 1)[-1],
                        f"--location={values['REGION']}", f"--schedule={c['schedule']}",
                        f"--time-zone={c.get('timeZone', 'Etc/UTC')}", f"--uri={http['uri']}",
                        f"--http-method={http['httpMethod']}",
                        f"--oauth-service-account-email={token['serviceAccountEmail']}",
                        *project])  # fmt: skip
    return out


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Render, check, write and print or run; one-line errors, exit 2."""
    env = os.environ if env is None else env
    p = argparse.ArgumentParser(
        prog="python -m lightning_app.cloud.deploy_monitoring", description=__doc__.split("\n")[0]
    )
    p.add_argument("--dry-run", action="store_true", default=env.get("DRY_RUN", "") not in ("", "0"))
    p.add_argument("--out", type=Path, default=Path("reports/monitoring"), help="rendered specs go here")
    args = p.parse_args(argv)
    try:
        values = settings(CloudSettings.from_env(env, dry_run=args.dry_run))
        rendered: list[tuple[Spec, Path]] = []
        args.out.mkdir(parents=True, exist_ok=True)
        for spec in specs(values):
            check(spec)
            target = args.out / f"{spec.kind}-{spec.source.name}"
            target.write_text(yaml.safe_dump(spec.content, sort_keys=False))
            rendered.append((spec, target))
        cmds = commands(rendered, values)
        if not args.dry_run and shutil.which("gcloud", path=env.get("PATH", "")) is None:
            raise DeployError(
                "gcloud not found: install the Google Cloud CLI, or use DRY_RUN=1 to print the commands"
            )
    except (DeployError, UserError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for cmd in cmds:
        print(shlex.join(cmd), flush=True)
        if not args.dry_run:
            result = subprocess.run(cmd, check=False)
            if result.returncode != 0:
                print(f"error: {cmd[1]} {cmd[2]} {cmd[3]} failed ({result.returncode})", file=sys.stderr)
                return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
