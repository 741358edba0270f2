"""``lightning_app.cloud.cloud_run`` outside a dry run, with a stand-in ``gcloud`` on PATH.

GCP cannot exist here: the stand-in is a shell script that records its arguments and
answers ``services describe`` with the JSON shape Cloud Run returns; a failing call and a
missing ``gcloud`` are one-line errors.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from lightning_app.cloud.cloud_run import CloudRun, CloudRunError
from lightning_app.cloud.settings import CloudSettings

DESCRIBE = {
    "status": {
        "traffic": [
            {"revisionName": "svc-00007", "percent": 90},
            {
                "revisionName": "svc-00008",
                "percent": 10,
                "tag": "candidate",
                "url": "https://candidate---svc.run.app",
            },
        ]
    }
}


def fake_gcloud(bin_dir: Path, log: Path, describe: object, fail_on: str = "") -> None:
    bin_dir.mkdir()
    script = bin_dir / "gcloud"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {shlex.quote(str(log))}\n'
        + (
            f'case "$*" in *{fail_on}*) echo "ERROR: (gcloud) permission denied" >&2; exit 1;; esac\n'
            if fail_on
            else ""
        )
        + f'case "$*" in *describe*) echo {shlex.quote(json.dumps(describe))};; esac\n'
    )
    script.chmod(0o755)


def test_gcloud_runs_for_real_and_its_answers_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "calls.log"
    fake_gcloud(tmp_path / "bin", log, DESCRIBE)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    cloud_run = CloudRun(
        CloudSettings.from_env({"PROJECT": "p", "REGION": "europe-west4"}, dry_run=False), "svc"
    )
    assert cloud_run.serving_revision() == "svc-00007"
    assert cloud_run.candidate_url() == "https://candidate---svc.run.app"
    cloud_run.deploy_candidate("img:v2")
    cloud_run.rollback("svc-00007")
    calls = log.read_text().splitlines()
    assert calls[2].startswith("run deploy svc --image=img:v2 --no-traffic --tag=candidate")
    assert (
        calls[3]
        == "run services update-traffic svc --to-revisions=svc-00007=100 --region=europe-west4 --project=p"
    )
    assert (
        calls[4]
        == "run services update-traffic svc --remove-tags=candidate --region=europe-west4 --project=p"
    )


def test_gcloud_failures_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "calls.log"
    fake_gcloud(tmp_path / "bin", log, {"status": {"traffic": []}}, fail_on="deploy")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    cloud_run = CloudRun(CloudSettings.from_env({"PROJECT": "p"}, dry_run=False), "svc")
    with pytest.raises(CloudRunError, match="serves no revision"):
        cloud_run.serving_revision()
    with pytest.raises(CloudRunError, match="has no revision tagged candidate"):
        cloud_run.candidate_url()
    with pytest.raises(
        CloudRunError, match=r"^gcloud run deploy svc failed: ERROR: \(gcloud\) permission denied$"
    ):
        cloud_run.deploy_candidate("img")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(CloudRunError, match="gcloud not found"):
        cloud_run.shift(10)
