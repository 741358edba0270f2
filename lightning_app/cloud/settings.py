"""The Google Cloud settings every cloud command shares, read once at its entry point.

``CloudSettings.from_env(env, dry_run=...)`` is the one reader of these variables (an empty
value counts as unset, so ``make`` can pass ``VAR=$(VAR)`` through):

| variable | default |
|---|---|
| ``PROJECT`` | ``GOOGLE_CLOUD_PROJECT``; required unless a dry run (``project-id``) |
| ``REGION`` | ``us-central1`` |
| ``REPO`` | ``brain-mri`` (Artifact Registry repository of cloudbuild.yaml) |
| ``IMAGE_TAG`` | ``latest`` |
| ``IMAGE_URI`` | ``${REGION}-docker.pkg.dev/${PROJECT}/${REPO}/train:${IMAGE_TAG}`` (the train image) |
| ``BUCKET`` | ``gs://${PROJECT}-brain-mri`` |
| ``SERVICE_ACCOUNT`` | unset (each command says what it means by its absence) |

Variables only one command uses (``MACHINE_TYPE``, ``DRIFT_SCHEDULE``, ...) are read by that
command from :meth:`CloudSettings.get`, so the environment is still read in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from lightning_app.errors import UserError

DRY_RUN_PROJECT = "project-id"


class CloudSettingsError(UserError):
    """A cloud setting that cannot make a valid command (one line for the user)."""


@dataclass(frozen=True)
class CloudSettings:
    """Project, region, train image, bucket: what the Vertex job and the monitoring share."""

    project: str
    region: str = "us-central1"
    repo: str = "brain-mri"
    image_tag: str = "latest"
    image_uri: str = ""
    bucket: str = ""
    service_account: str = ""
    dry_run: bool = False
    extra: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, dry_run: bool) -> CloudSettings:
        """Read the settings from ``env``; without a project, a dry run gets a placeholder."""
        project = env.get("PROJECT") or env.get("GOOGLE_CLOUD_PROJECT") or ""
        if not project:
            if not dry_run:
                raise CloudSettingsError(
                    "set PROJECT (or GOOGLE_CLOUD_PROJECT) to the Google Cloud project, or use DRY_RUN=1"
                )
            project = DRY_RUN_PROJECT
        region = env.get("REGION") or "us-central1"
        repo = env.get("REPO") or "brain-mri"
        tag = env.get("IMAGE_TAG") or "latest"
        return cls(
            project=project,
            region=region,
            repo=repo,
            image_tag=tag,
            image_uri=env.get("IMAGE_URI") or f"{region}-docker.pkg.dev/{project}/{repo}/train:{tag}",
            bucket=(env.get("BUCKET") or f"gs://{project}-brain-mri").rstrip("/"),
            service_account=env.get("SERVICE_ACCOUNT") or "",
            dry_run=dry_run,
            extra=dict(env),
        )

    def get(self, name: str, default: str = "") -> str:
        """A command's own setting ``name`` (empty or unset: ``default``)."""
        return self.extra.get(name) or default
