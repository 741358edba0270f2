"""The drift job's path through Cloud Storage, against a real ``gcp-storage-emulator``.

The job reads a log sink's export (``gs://<bucket>/run.googleapis.com/stdout/YYYY/MM/DD/``),
the reference in the served ``.mar`` (``gs://...``) and writes its report to
``gs://.../{today:%Y-%m-%d}``; here the bucket lives in the emulator on loopback.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from benchmarks import simulate
from lightning_app.monitor.cli import main
from tests.data.dvc_helpers import GcsEmulator

pytestmark = pytest.mark.slow


def test_sink_export_in_gcs_to_report_in_gcs(
    tmp_path, monkeypatch, mar_file, engine, held_out, capsys
) -> None:
    records = simulate.records(engine, held_out)
    with GcsEmulator(tmp_path / "emulator.log") as emulator:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.endpoint)
        monkeypatch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        bucket = emulator.create_bucket("brain-mri-logs")
        day = datetime.now(UTC).strftime("%Y/%m/%d")
        text = "".join(json.dumps({"jsonPayload": r, "timestamp": r["time"]}) + "\n" for r in records)
        emulator.overwrite(
            bucket, f"run.googleapis.com/stdout/{day}/00:00:00_00:59:59_S0.json", text.encode()
        )
        emulator.overwrite(bucket, "model_store/brain_mri.mar", mar_file.read_bytes())
        code = main(
            [
                "drift",
                "--logs", f"gs://{bucket}/run.googleapis.com/stdout/{{today:%Y/%m/%d}}/",
                "--hours", "24",
                "--reference", f"gs://{bucket}/model_store/brain_mri.mar",
                "--out", f"gs://{bucket}/drift/{{today:%Y-%m-%d}}",
            ]
        )  # fmt: skip
        assert code == 0, capsys.readouterr().err
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        written = [name for name in emulator.objects(bucket) if name.startswith("drift/")]
        assert written == [
            f"drift/{today}/{n}" for n in ("drift_report.md", "drift_report.png", "verdict.json")
        ]
        verdict = json.loads(emulator.read(bucket, f"drift/{today}/verdict.json"))
        assert verdict["status"] == "no_drift" and verdict["window"] == len(records)
        assert main(["drift", "--logs", f"gs://{bucket}/nothing-here/", "--reference", str(mar_file)]) == 2
    assert "no log files found" in capsys.readouterr().err
