"""From a Vertex training run to a served model, on Cloud Storage (a real GCS emulator).

A smoke-config run of the train entrypoint with ``gs://`` AIP_* directories (no FUSE
mount here: it stages locally and uploads) publishes ``brain_mri.mar`` (and logs it as the
W&B model artifact, offline here: W&B cannot be reached); the deploy step
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
from tests.serve.serve_images import real_jpeg

pytestmark = pytest.mark.slow


def test_a_vertex_run_on_gcs_publishes_a_mar_that_deploy_fetches_and_torchserve_serves(
    small_br35h: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lightning_app.cloud.deploy_model import main as deploy
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
        scan = real_jpeg()
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
    from lightning_app.cloud.deploy_model import main as deploy

    bad = tmp_path / "brain_mri.mar"
    bad.write_bytes(b"not a zip")
    assert deploy(["--mar-uri", str(bad), "--out", str(tmp_path / "out.mar"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is not a TorchServe model archive" in err and err.count("\n") == 1
    assert deploy(["--mar-uri", "gs://", "--out", str(tmp_path / "o.mar"), "--dry-run"]) == 2
    assert "not a Cloud Storage URI" in capsys.readouterr().err
    assert not (tmp_path / "out.mar").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["brain_mri.mar"]  # no partial files left


def fake_archive(path: Path, name: str = "brain_mri", version: str = "0123456789ab") -> Path:
    """A zip with TorchServe's manifest (all ``make deploy-model`` reads before Cloud Build)."""
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(
            "MAR-INF/MANIFEST.json", json.dumps({"model": {"modelName": name, "modelVersion": version}})
        )
    return path


def test_deploy_submits_cloud_build_with_exactly_that_uri_or_says_gcloud_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """gcloud cannot exist here: without it the deploy is a one-line error, after the checks."""
    from lightning_app.cloud.deploy_model import main as deploy

    mar = fake_archive(tmp_path / "published.mar")
    out = tmp_path / "store" / "brain_mri.mar"
    assert deploy(["--mar-uri", str(mar), "--out", str(out), "--dry-run", "--substitution", "_REGION=x"]) == 0
    printed = capsys.readouterr().out
    assert "version:    0123456789ab" in printed
    assert f"--substitutions=_MAR_URI={mar},COMMIT_SHA=" in printed and ",_REGION=x" in printed
    assert out.read_bytes() == mar.read_bytes()
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    assert deploy(["--mar-uri", str(mar), "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: gcloud not found")
    other = fake_archive(tmp_path / "other.mar", name="other_model")
    assert deploy(["--mar-uri", str(other), "--out", str(out), "--dry-run"]) == 2
    assert "archives model 'other_model'" in capsys.readouterr().err
    assert out.read_bytes() == mar.read_bytes()  # the refused archive replaced nothing
