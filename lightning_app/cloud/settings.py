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
command from :meth:`CloudSettings.get`, so the environment is still read in one place. The
registry commands (``make register``, ``make promote``, ``make rollout``) read these:

| variable | default |
|---|---|
| ``REGISTRY`` | ``${BUCKET}/registry/brain_mri`` |
| ``SERVICE`` | ``brain-mri-serve`` (the Cloud Run service a rollout shifts) |
| ``SERVE_IMAGE`` | ``${REGION}-docker.pkg.dev/${PROJECT}/${REPO}/serve:<version>`` |
| ``GATE_MIN_ACCURACY``, ``GATE_MIN_AUROC``, ``GATE_MAX_OOD_FLAGGED`` | ``0.90``, ``0.95``, ``0.10`` |
| ``GATE_RUNTIME`` | ``torchserve`` (``litserve``: how the golden gate serves the archive) |
| ``CANARY_MAX_ERROR_RATE``, ``CANARY_MAX_P95_MS``, ``CANARY_MIN_AGREEMENT`` | ``0``, ``2000``, ``1.0`` |
| ``CANARY_PROB_TOLERANCE``, ``CANARY_REQUESTS`` | ``0.001``, ``40`` |
| ``CANARY_CONCURRENCY``, ``CANARY_TIMEOUT_S`` | ``4``, ``30`` |
| ``CANARY_STEPS`` | ``10,50,100`` (traffic percentages) |
| ``WANDB_PROJECT``, ``WANDB_REGISTRY`` | ``brain-mri``, ``wandb-registry-model/brain-mri`` |

A command that needs only the bucket (the registry's) passes ``bucket_only=True``: then
``PROJECT`` may be missing when ``BUCKET`` or ``REGISTRY`` is set.
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
    def from_env(cls, env: Mapping[str, str], *, dry_run: bool, bucket_only: bool = False) -> CloudSettings:
        """Read the settings from ``env``; without a project, a dry run gets a placeholder."""
        project = env.get("PROJECT") or env.get("GOOGLE_CLOUD_PROJECT") or ""
        if not project:
            if bucket_only and not (env.get("BUCKET") or env.get("REGISTRY")):
                raise CloudSettingsError(
                    "set BUCKET=gs://<bucket> (or REGISTRY=gs://<bucket>/registry/brain_mri)"
                )
            if not dry_run and not bucket_only:
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
