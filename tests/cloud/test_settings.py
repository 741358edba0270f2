"""One reader of the shared cloud variables: the Vertex job and the monitoring deploy agree."""

from __future__ import annotations

import pytest

from lightning_app.cloud import deploy_monitoring, vertex
from lightning_app.cloud.settings import DRY_RUN_PROJECT, CloudSettings, CloudSettingsError


def test_defaults_derive_from_project_region_repo_and_tag() -> None:
    cloud = CloudSettings.from_env({"PROJECT": "p", "REGION": "europe-west4"}, dry_run=False)
    assert cloud.image_uri == "europe-west4-docker.pkg.dev/p/brain-mri/train:latest"
    assert cloud.bucket == "gs://p-brain-mri" and cloud.service_account == ""
    tagged = CloudSettings.from_env(
        {"GOOGLE_CLOUD_PROJECT": "g", "REPO": "mri", "IMAGE_TAG": "abc"}, dry_run=False
    )
    assert tagged.project == "g" and tagged.image_uri == "us-central1-docker.pkg.dev/g/mri/train:abc"


def test_empty_values_count_as_unset_and_explicit_values_win() -> None:
    env = {"PROJECT": "p", "REGION": "", "BUCKET": "gs://b/", "IMAGE_URI": "img:1", "MACHINE_TYPE": ""}
    cloud = CloudSettings.from_env(env, dry_run=False)
    assert (cloud.region, cloud.bucket, cloud.image_uri) == ("us-central1", "gs://b", "img:1")
    assert cloud.get("MACHINE_TYPE", "n1") == "n1" and cloud.get("UNSET") == ""


def test_a_project_is_required_unless_dry_run() -> None:
    with pytest.raises(CloudSettingsError, match="set PROJECT"):
        CloudSettings.from_env({}, dry_run=False)
    assert CloudSettings.from_env({}, dry_run=True).project == DRY_RUN_PROJECT


def test_vertex_job_and_drift_job_run_the_same_train_image() -> None:
    env = {"PROJECT": "p", "REPO": "mri", "IMAGE_TAG": "abc123"}
    cloud = CloudSettings.from_env(env, dry_run=True)
    job = vertex.settings("configs/default.yaml", cloud)
    monitoring = deploy_monitoring.settings(cloud)
    assert job["IMAGE_URI"] == monitoring["IMAGE_URI"] == "us-central1-docker.pkg.dev/p/mri/train:abc123"
    assert job["BUCKET"] == monitoring["BUCKET"] == "gs://p-brain-mri"
    assert monitoring["SERVICE_ACCOUNT"] == "brain-mri-monitor@p.iam.gserviceaccount.com"
