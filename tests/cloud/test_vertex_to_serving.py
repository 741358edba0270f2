"""From a Vertex training run to a served model, on Cloud Storage (a real GCS emulator).

A smoke-config run of the train entrypoint with ``gs://`` AIP_* directories (no FUSE
mount here: it stages locally and uploads) publishes ``brain_mri.mar`` (and logs it as the
W&B model artifact, offline here: W&B cannot be reached); that archive becomes a model
registry version in the same bucket (what ``make register`` uploads; the gates of ``make
promote`` are tested in test_registry_flow.py, the aliases are moved directly here); the
deploy step (``make deploy-model ALIAS=production``) fetches exactly that version; a real
TorchServe started from the fetched archive answers with its version. Only Cloud Build
itself (``gcloud builds submit``) cannot run here: the deploy is a dry run that prints its
command.
"""

from __future__ import annotations

import json
import shlex
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port
from tests.data.dvc_helpers import GcsEmulator
from tests.serve.serve_images import real_jpeg

pytestmark = pytest.mark.slow


def test_a_vertex_run_on_gcs_publishes_a_mar_that_deploy_fetches_and_torchserve_serves(
    small_br35h: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lightning_app.cloud.deploy_model import main as deploy
    from lightning_app.cloud.registry import MAR, Registry
    from lightning_app.train_entry import main as train
    from serve.launcher import start_torchserve

    assert not Path("/gcs").is_dir(), "this test needs a machine without a /gcs mount"
    with GcsEmulator(tmp_path / "emulator.log") as gcs:
        bucket = gcs.create_bucket("brain-mri-jobs")
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.endpoint)
        monkeypatch.setenv("WANDB_MODE", "offline")  # W&B cannot be reached here: the artifact stays local
        env = {
            "AIP_MODEL_DIR": f"gs://{bucket}/job-1/model/",
            "AIP_CHECKPOINT_DIR": f"gs://{bucket}/job-1/checkpoints/",
            "AIP_TENSORBOARD_LOG_DIR": f"gs://{bucket}/job-1/logs/",
        }
        train(
            [
                "fit", "--config", str(REPO / "configs/smoke.yaml"),
                "--data.data_dir", str(small_br35h), "--data.cache_dir", str(tmp_path / "cache"),
                "--trainer.enable_progress_bar", "false",
                "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2",
            ],
            env,
        )  # fmt: skip
        objects = gcs.objects(bucket)
        assert "job-1/model/brain_mri.mar" in objects
        assert {"job-1/model/model_meta.json", "job-1/model/model.ckpt", "job-1/logs/metrics.json"} <= set(
            objects
        )
        assert any(o.startswith("job-1/checkpoints/version_0/checkpoints/best-") for o in objects)
        published = json.loads(gcs.read(bucket, "job-1/model/model_meta.json"))
        # the archive is the run's W&B model artifact (offline here: in the run's record log)
        (record,) = [
            o for o in objects if o.startswith("job-1/checkpoints/version_0/wandb/") and o.endswith(".wandb")
        ]
        logged = gcs.read(bucket, record)
        assert b"brain_mri.mar" in logged and b"best" in logged and published["version"].encode() in logged
        capsys.readouterr()

        job_mar = tmp_path / "job" / MAR
        job_mar.parent.mkdir()
        job_mar.write_bytes(gcs.read(bucket, "job-1/model/brain_mri.mar"))
        registry = Registry.at(f"gs://{bucket}/registry/brain_mri")
        version = registry.publish({MAR: job_mar}, {"model_version": published["version"]})
        for alias in ("staging", "production"):
            registry.move_alias(alias, version, expected=registry.alias(alias))
        store = tmp_path / "deploy" / "model_store"
        code = deploy(["--out", str(store / "brain_mri.mar"), "--dry-run"], {"BUCKET": bucket})
        out = capsys.readouterr().out
        assert code == 0, out
        assert f"version:    {published['version']}" in out
        command = shlex.split(out.strip().splitlines()[-1].removeprefix("+ "))
        assert command[:3] == ["gcloud", "builds", "submit"]
        assert f"_MAR_URI={registry.uri(version, MAR)}," in command[4]
        fetched = (store / "brain_mri.mar").read_bytes()
        assert fetched == gcs.read(bucket, "job-1/model/brain_mri.mar")

    ports = {"inference_port": free_port(), "management_port": free_port(), "metrics_port": free_port()}
    with start_torchserve(store / "brain_mri.mar", tmp_path / "ts", timeout=180, **ports) as server:
        scan = real_jpeg()
        request = urllib.request.Request(
            server.predict_url, data=scan, headers={"Content-Type": "application/octet-stream"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    assert answer["version"] == published["version"]
    assert {p["label"] for p in answer["probabilities"]} == {"no_tumor", "tumor"}
