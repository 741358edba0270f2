"""``make vertex-train ... DRY_RUN=1``: the rendered Vertex AI job and the gcloud command.

gcloud and Vertex AI cannot exist here: the job is rendered with ``DRY_RUN=1`` and
checked as data (valid YAML, image URI, replica counts), and its container arguments are
run through the real LightningCLI with ``--print_config``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lightning_app.cloud.cluster import fit_args
from lightning_app.cloud.vertex import main
from tests.conftest import REPO

ENV = {"PROJECT": "demo-project", "REGION": "europe-west4", "REPO": "mri", "DISPLAY_NAME": "job-1"}


def dry_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str, **env: str
) -> tuple[Any, list[str]]:
    code = main(
        ["--config", str(REPO / "configs/default.yaml"), "--out", str(tmp_path), *args], {**ENV, **env}
    )
    out = capsys.readouterr().out
    assert code == 0
    spec_text, command = out.split("# submit with:\n")
    spec = yaml.safe_load(spec_text)  # the printed spec is the YAML file's content
    assert spec == yaml.safe_load((tmp_path / "job-1.yaml").read_text())
    return spec, shlex.split(command)


def test_single_replica_job(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec, command = dry_run(capsys, tmp_path, DRY_RUN="1")
    (pool,) = spec["workerPoolSpecs"]
    container = pool["containerSpec"]
    assert container["imageUri"] == "europe-west4-docker.pkg.dev/demo-project/mri/train:latest"
    assert container["args"] == [
        "fit",
        "--config",
        "configs/default.yaml",
        "--data.data_dir",
        "/gcs/demo-project-brain-mri/data/br35h",
    ]
    assert pool["replicaCount"] == 1
    assert spec["baseOutputDirectory"]["outputUriPrefix"] == "gs://demo-project-brain-mri/vertex/job-1"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["WANDB_API_KEY_SECRET"] == "projects/demo-project/secrets/wandb-api-key/versions/latest"
    assert "WANDB_API_KEY" not in env
    assert command == [
        "gcloud", "ai", "custom-jobs", "create", "--project=demo-project", "--region=europe-west4",
        "--display-name=job-1", f"--config={tmp_path / 'job-1.yaml'}",
    ]  # fmt: skip


def test_ddp_job_has_one_primary_and_n_minus_one_workers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec, _ = dry_run(
        capsys, tmp_path, "--spec", str(REPO / "configs/vertex/ddp.yaml"), "--replicas", "4",
        DRY_RUN="1", IMAGE_TAG="abc123", SERVICE_ACCOUNT="trainer@demo-project.iam.gserviceaccount.com",
    )  # fmt: skip
    primary, workers = spec["workerPoolSpecs"]
    assert (primary["replicaCount"], workers["replicaCount"]) == (1, 3)
    assert primary["containerSpec"] == workers["containerSpec"]
    assert primary["containerSpec"]["imageUri"].endswith("/mri/train:abc123")
    assert primary["machineSpec"]["acceleratorType"] == "NVIDIA_TESLA_T4"
    assert spec["serviceAccount"] == "trainer@demo-project.iam.gserviceaccount.com"
    args = primary["containerSpec"]["args"]
    assert args[args.index("--trainer.strategy") + 1] == "ddp"


@pytest.mark.slow
def test_job_arguments_are_accepted_by_the_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec, _ = dry_run(capsys, tmp_path, "--spec", str(REPO / "configs/vertex/ddp.yaml"), DRY_RUN="1")
    args = spec["workerPoolSpecs"][0]["containerSpec"]["args"]
    # What lightning_app.train_entry appends on the primary replica of a 2-replica job.
    cluster = {
        "cluster": {"workerpool0": ["h0:2222"], "workerpool1": ["h1:2222"]},
        "task": {"type": "workerpool0"},
    }
    extra = fit_args({"AIP_CHECKPOINT_DIR": "gs://b/j/checkpoints/", "CLUSTER_SPEC": json.dumps(cluster)})
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_app", *args, *extra, "--print_config"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = yaml.safe_load(proc.stdout)
    trainer = config["trainer"]
    assert (trainer["strategy"], trainer["accelerator"], str(trainer["devices"]), trainer["num_nodes"]) == (
        "ddp",
        "gpu",
        "1",
        2,
    )
    assert trainer["default_root_dir"] == "/gcs/b/j/checkpoints"
    plugins = trainer["plugins"] if isinstance(trainer["plugins"], list) else [trainer["plugins"]]
    assert plugins[0]["class_path"] == "lightning_app.cloud.cluster.VertexEnvironment"
    assert config["data"]["data_dir"] == "/gcs/demo-project-brain-mri/data/br35h"
    assert config["model"]["backbone"] == "resnet18"  # from configs/default.yaml inside the image


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--config", "/etc/hostname"], {"DRY_RUN": "1"}, "config must be a file under"),
        (
            ["--config", str(REPO / "pyproject.toml")],
            {"DRY_RUN": "1"},
            "config must be a file under configs/",
        ),
        (["--config", "configs/missing.yaml"], {"DRY_RUN": "1"}, "config file not found"),
        (["--config", "configs/smoke.yaml"], {"PROJECT": ""}, "set PROJECT"),
        (
            ["--config", "configs/smoke.yaml", "--spec", "configs/vertex/ddp.yaml", "--replicas", "1"],
            {"DRY_RUN": "1"},
            "REPLICAS must be 2 or more",
        ),
        (
            ["--config", "configs/smoke.yaml", "--replicas", "3"],
            {"DRY_RUN": "1"},
            "use configs/vertex/ddp.yaml",
        ),
        (
            ["--config", "configs/smoke.yaml"],
            {"DRY_RUN": "1", "OUTPUT_URI": "/tmp/x"},
            "OUTPUT_URI must be a gs:// URI",
        ),
        (
            ["--config", "configs/smoke.yaml", "--spec", "configs/nope.yaml"],
            {"DRY_RUN": "1"},
            "cannot read spec template",
        ),
    ],
)
def test_bad_settings_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    args: list[str], env: dict[str, str], message: str,
) -> None:  # fmt: skip
    monkeypatch.chdir(REPO)
    assert main([*args, "--out", str(tmp_path)], {**ENV, **env}) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ")
    assert message in err
    assert "\n" not in err
    assert not list(tmp_path.iterdir())


def test_template_placeholders_must_all_have_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = tmp_path / "t.yaml"
    template.write_text("workerPoolSpecs:\n  - containerSpec: {imageUri: ${NOT_A_SETTING}}\n")
    assert (
        main(
            ["--config", "configs/smoke.yaml", "--spec", str(template), "--out", str(tmp_path)],
            {**ENV, "DRY_RUN": "1"},
        )
        == 2
    )
    assert "no value for placeholder 'NOT_A_SETTING'" in capsys.readouterr().err


def test_submitting_without_gcloud_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no gcloud on this PATH (nor on this machine)
    assert main(["--config", str(REPO / "configs/smoke.yaml"), "--out", str(tmp_path)], ENV) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: gcloud not found: install the Google Cloud CLI, or use DRY_RUN=1 to print the job"


def test_submitting_runs_the_printed_gcloud_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A stand-in ``gcloud`` (the real one cannot run here) records the call it gets."""
    fake = tmp_path / "bin/gcloud"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/called\nexit 3\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    assert main(["--config", str(REPO / "configs/smoke.yaml"), "--out", str(tmp_path)], ENV) == 3
    called = (tmp_path / "called").read_text().split()
    assert called[:3] == ["ai", "custom-jobs", "create"]
    assert f"--config={tmp_path}/job-1.yaml" in called


def test_make_target_prints_the_job(tmp_path: Path) -> None:
    env = {**os.environ, "PROJECT": "demo-project", "DISPLAY_NAME": "from-make"}
    proc = subprocess.run(
        ["make", "-s", "vertex-train", "CONFIG=configs/smoke.yaml", "SPEC=configs/vertex/ddp.yaml",
         "REPLICAS=3", "DRY_RUN=1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "replicaCount: 2" in proc.stdout
    assert "gcloud ai custom-jobs create --project=demo-project" in proc.stdout
    (REPO / "runs/vertex/from-make.yaml").unlink()
