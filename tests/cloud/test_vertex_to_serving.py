"""From a Vertex training run to a served model, on Cloud Storage (a real GCS emulator).

A smoke-config run of the train entrypoint with ``gs://`` AIP_* directories (no FUSE
mount here: it stages locally and uploads) publishes ``brain_mri.mar``; the deploy step
(``make deploy-model MAR_URI=...``) fetches exactly that object; a real TorchServe started
from the fetched archive answers with its version. Only Cloud Build itself (``gcloud
builds submit``) cannot run here: the deploy is a dry run that prints its command.
"""

from __future__ import annotations

import json
import shlex
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port
from tests.data.dvc_helpers import GcsEmulator

pytestmark = pytest.mark.slow


def test_a_vertex_run_on_gcs_publishes_a_mar_that_deploy_fetches_and_torchserve_serves(
    small_br35h: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lightning_app.deploy import main as deploy
    from lightning_app.train_entry import main as train
    from serve.launcher import start_torchserve

    with GcsEmulator(tmp_path / "emulator.log") as gcs:
        bucket = gcs.create_bucket("brain-mri-jobs")
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.endpoint)
        monkeypatch.setenv("WANDB_MODE", "disabled")
        env = {
            "GCS_FUSE_ROOT": str(tmp_path / "no-fuse-mount-here"),
            "AIP_MODEL_DIR": f"gs://{bucket}/job-1/model/",
            "AIP_CHECKPOINT_DIR": f"gs://{bucket}/job-1/checkpoints/",
            "AIP_TENSORBOARD_LOG_DIR": f"gs://{bucket}/job-1/logs/",
        }
        train(
            [
                "fit", "--config", str(REPO / "configs/smoke.yaml"),
                "--data.data_dir", str(small_br35h), "--data.cache_dir", str(tmp_path / "cache"),
                "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
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
        assert not (tmp_path / "no-fuse-mount-here").exists()
        published = json.loads(gcs.read(bucket, "job-1/model/model_meta.json"))
        capsys.readouterr()

        uri = f"gs://{bucket}/job-1/model/brain_mri.mar"
        store = tmp_path / "deploy" / "model_store"
        assert deploy(["--mar-uri", uri, "--out", str(store / "brain_mri.mar"), "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert f"version:    {published['version']}" in out
        command = shlex.split(out.strip().splitlines()[-1])
        assert command[:3] == ["gcloud", "builds", "submit"]
        assert f"_MAR_URI={uri}" in command[command.index("--config") + 2]
        fetched = (store / "brain_mri.mar").read_bytes()
        assert fetched == gcs.read(bucket, "job-1/model/brain_mri.mar")

    ports = {"inference_port": free_port(), "management_port": free_port(), "metrics_port": free_port()}
    with start_torchserve(store / "brain_mri.mar", tmp_path / "ts", timeout=180, **ports) as server:
        scan = (REPO / "lightning_app/ui/examples/tumor-y864.jpg").read_bytes()
        request = urllib.request.Request(
            server.predict_url, data=scan, headers={"Content-Type": "application/octet-stream"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    assert answer["version"] == published["version"]
    assert {p["label"] for p in answer["probabilities"]} == {"no_tumor", "tumor"}


def test_deploy_refuses_what_is_not_a_model_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lightning_app.deploy import main as deploy

    bad = tmp_path / "brain_mri.mar"
    bad.write_bytes(b"not a zip")
    assert deploy(["--mar-uri", str(bad), "--out", str(tmp_path / "out.mar"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is not a TorchServe model archive" in err and err.count("\n") == 1
    assert deploy(["--mar-uri", "gs://", "--out", str(tmp_path / "o.mar"), "--dry-run"]) == 2
    assert "not a Cloud Storage URI" in capsys.readouterr().err
    assert not (tmp_path / "out.mar").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["brain_mri.mar"]  # no partial files left
