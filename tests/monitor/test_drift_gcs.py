"""The drift job's path through Cloud Storage, against a real GCS emulator (fake-gcs-server).

The job reads a log sink's export (``gs://<bucket>/run.googleapis.com/stdout/YYYY/MM/DD/``),
the reference profile of the model that the registry's ``production`` alias names (the
session's real ``.mar``, published as a registry version) and writes its report to
``gs://.../{today:%Y-%m-%d}``; here the bucket lives in the emulator on loopback.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from benchmarks import simulate
from lightning_app.cloud import gcs
from lightning_app.cloud.deploy_model import mar_version
from lightning_app.cloud.registry import MAR, Registry
from lightning_app.monitor.cli import main

pytestmark = pytest.mark.slow


def test_sink_export_in_gcs_to_report_in_gcs_against_the_registrys_production(
    gcs_bucket, tmp_path, monkeypatch, mar_file, engine, held_out, capsys
) -> None:
    records = simulate.records(engine, held_out)
    day = datetime.now(UTC).strftime("%Y/%m/%d")
    text = "".join(json.dumps({"jsonPayload": r, "timestamp": r["time"]}) + "\n" for r in records)
    gcs.write_bytes(f"{gcs_bucket}/run.googleapis.com/stdout/{day}/00:00:00_00:59:59_S0.json", text.encode())
    registry = Registry.at(f"{gcs_bucket}/registry/brain_mri")
    version = registry.publish({MAR: mar_file}, {"model_version": mar_version(mar_file)})
    job = [
        "drift",
        "--logs", f"{gcs_bucket}/run.googleapis.com/stdout/{{today:%Y/%m/%d}}/",
        "--hours", "24",
        "--registry", registry.root,
        "--out", f"{gcs_bucket}/drift/{{today:%Y-%m-%d}}",
    ]  # fmt: skip

    assert main(job) == 2  # the job's default alias, production, names nothing yet
    assert capsys.readouterr().err == (
        f"error: alias production points at no version in {registry.root} yet: "
        "make promote VERSION=vN ALIAS=production\n"
    )
    registry.move_alias("production", version, expected=registry.alias("production"))
    assert main(job) == 0, capsys.readouterr().err
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    written = sorted(gcs.list_objects(f"{gcs_bucket}/drift/"))
    assert written == [
        f"{gcs_bucket}/drift/{today}/{n}" for n in ("drift_report.md", "drift_report.png", "verdict.json")
    ]
    verdict = json.loads(gcs.read_bytes(f"{gcs_bucket}/drift/{today}/verdict.json"))
    assert verdict["status"] == "no_drift" and verdict["window"] == len(records)
    report = gcs.read_bytes(f"{gcs_bucket}/drift/{today}/drift_report.md").decode()
    assert f"registry {version} (production): {registry.uri(version, MAR)}" in report

    # make drift VERSION=1: the registry from BUCKET, the version by its number
    monkeypatch.setenv("BUCKET", gcs_bucket)
    local = ["drift", "--logs", job[2], "--out", str(tmp_path / "report")]
    assert main([*local, "--version", "1"]) == 0, capsys.readouterr().err
    assert f"registry {version}: " in (tmp_path / "report" / "drift_report.md").read_text()
    capsys.readouterr()

    refused = [
        (["--reference", registry.uri(version, MAR)], "reference is read through the registry"),
        (["--reference", str(mar_file), "--alias", "production"], "--reference is a local file"),
        (["--alias", "prod"], "unknown alias 'prod'"),
        (["--version", "v4"], f"no version v4 in {registry.root}"),
    ]
    for extra, message in refused:
        assert main([*local, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert main(["drift", "--logs", f"{gcs_bucket}/nothing-here/", "--reference", str(mar_file)]) == 2
    assert "no log files found" in capsys.readouterr().err
