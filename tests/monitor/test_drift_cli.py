"""``python -m lightning_app.monitor drift`` on real windows of prediction records.

The records come from the session's trained model through the same code as the handler
(``monitor.simulate.records``: InferenceEngine + PredictionLog, no server); the reference
is the profile that the export step put in the session's ``.mar``. Shifted windows are the
same real scans under realistic acquisition changes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import simulate
from lightning_app.monitor.cli import main
from lightning_app.monitor.report import FIGURE, REPORT, VERDICT

pytestmark = pytest.mark.slow


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def as_log_entries(records: list[dict]) -> list[dict]:
    """What a Cloud Logging sink exports: special fields lifted out, the rest in jsonPayload."""
    entries = []
    for i, r in enumerate(records):
        payload = {
            k: v for k, v in r.items() if k not in ("severity", "time", "logging.googleapis.com/labels")
        }
        entries.append(
            {
                "insertId": f"id{i}",
                "jsonPayload": payload,
                "severity": r["severity"],
                "timestamp": r["time"],
                "labels": r["logging.googleapis.com/labels"],
                "logName": "projects/p/logs/run.googleapis.com%2Fstdout",
                "resource": {"type": "cloud_run_revision", "labels": {"service_name": "brain-mri-serve"}},
            }
        )
    return entries


@pytest.fixture(scope="module")
def unshifted(engine, held_out) -> list[dict]:
    return simulate.records(engine, held_out)


def drift(tmp_path: Path, logs: Path, mar_file: Path, *extra: str) -> tuple[int, dict, Path]:
    out = tmp_path / "report"
    code = main(["drift", "--logs", str(logs), "--reference", str(mar_file), "--out", str(out), *extra])
    verdict = json.loads((out / VERDICT).read_text()) if (out / VERDICT).is_file() else {}
    return code, verdict, out


def test_held_out_scans_raise_no_alarm(tmp_path, mar_file, unshifted, capsys) -> None:
    code, verdict, out = drift(tmp_path, write_jsonl(tmp_path / "w.jsonl", unshifted), mar_file)
    assert code == 0, verdict
    assert verdict["status"] == "no_drift" and verdict["window"] == len(unshifted)
    assert {t["name"] for t in verdict["tests"] if t["p_value"] is not None} >= {
        "class_mix", "confidence", "embedding", "intensity_mean", "intensity_std", "image_size"
    }  # fmt: skip
    assert (out / REPORT).read_text().startswith("# Drift report")
    assert (out / FIGURE).stat().st_size > 10_000
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["event"] == "drift_verdict" and line["drift"] is False and line["severity"] == "INFO"


@pytest.mark.parametrize(
    ("shift", "expected"), [("contrast", "intensity_std"), ("low_resolution", "image_size")]
)
def test_shifted_scans_raise_the_alarm(tmp_path, mar_file, engine, held_out, shift, expected, capsys) -> None:
    rng = np.random.default_rng(0)
    images = [simulate.shifted(b, simulate.SHIFTS[shift], rng) for b in held_out]
    code, verdict, out = drift(
        tmp_path, write_jsonl(tmp_path / "w.jsonl", simulate.records(engine, images)), mar_file
    )
    assert code == 1
    assert verdict["status"] == "drift"
    assert expected in [t["name"] for t in verdict["tests"] if t["drift"]]
    assert "DRIFT DETECTED" in (out / REPORT).read_text()
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["severity"] == "ERROR" and expected in line["failed_tests"]


def test_cloud_logging_export_gives_the_same_verdict(tmp_path, mar_file, unshifted) -> None:
    bare = drift(tmp_path / "a", write_jsonl(tmp_path / "bare.jsonl", unshifted), mar_file)[1]
    folder = tmp_path / "sink" / "run.googleapis.com" / "stdout" / "2026" / "11" / "30"
    folder.mkdir(parents=True)
    entries = as_log_entries(unshifted)
    write_jsonl(folder / "00:00:00_00:59:59_S0.json", entries[:25])
    (folder / "01:00:00_01:59:59_S0.json").write_text(
        json.dumps(entries[25:], indent=1)
    )  # gcloud's JSON array
    code, wrapped, _ = drift(tmp_path / "b", tmp_path / "sink", mar_file)
    assert code == 0
    assert [t["p_value"] for t in wrapped["tests"]] == [t["p_value"] for t in bare["tests"]]
    assert wrapped["context"]["log files"] == 2


def test_too_few_predictions_give_no_verdict(tmp_path, mar_file, unshifted) -> None:
    code, verdict, _ = drift(tmp_path, write_jsonl(tmp_path / "w.jsonl", unshifted[:10]), mar_file)
    assert code == 0 and verdict["status"] == "insufficient_data" and verdict["tests"] == []


def test_other_model_versions_are_left_out(tmp_path, mar_file, unshifted) -> None:
    other = [{**r, "model": {**r["model"], "version": "ffffffffffff"}} for r in unshifted]
    code, verdict, _ = drift(tmp_path, write_jsonl(tmp_path / "w.jsonl", other), mar_file)
    assert code == 0 and verdict["status"] == "insufficient_data"
    assert verdict["context"]["other model versions dropped"] == len(other)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("2026-11-30T10:00:00,000 [INFO ] W-9000 MODEL_LOG - {", "not JSON"),
        ('{"event": "prediction", "schema": 1}', "no prediction.class"),
        ('{"event": "prediction", "schema": 9, "prediction": {}}', "unknown record schema"),
        ("[" * 100_000, "not JSON"),
        ('{"jsonPayload": 5}', "neither a prediction record"),
        ("42", "neither a prediction record"),
    ],
)
def test_malformed_lines_are_rejected_with_a_clear_error(
    tmp_path, mar_file, unshifted, capsys, line, why
) -> None:
    logs = write_jsonl(tmp_path / "w.jsonl", unshifted)
    logs.write_text(logs.read_text() + line + "\n")
    code, _, _ = drift(tmp_path, logs, mar_file)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert (
        err.startswith("error: malformed log line:") and f"w.jsonl:{len(unshifted) + 1}" in err and why in err
    )
    code, verdict, _ = drift(tmp_path, logs, mar_file, "--skip-malformed")
    assert code == 0 and verdict["context"]["malformed lines skipped"] == 1


def test_unusable_arguments_are_one_line_errors(tmp_path, mar_file, unshifted, capsys) -> None:
    logs = write_jsonl(tmp_path / "w.jsonl", unshifted)
    assert drift(tmp_path, tmp_path / "missing.jsonl", mar_file)[0] == 2
    assert drift(tmp_path, logs, tmp_path / "no.mar")[0] == 2
    assert drift(tmp_path, logs, mar_file, "--alpha", "2")[0] == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("error: ") for e in errors)
