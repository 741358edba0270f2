"""The monitoring specs in configs/monitoring: rendered, checked against their schemas, dry-run.

GCP itself cannot exist here, so nothing is created: ``DRY_RUN=1`` prints the gcloud
commands (as ``make vertex-train DRY_RUN=1`` does), and the tests check what those commands
would send: every rendered file passes its schema (written from the REST references, see
``configs/monitoring/schemas``), and every ``jsonPayload`` field that a log metric, alert or
sink reads exists in the records the real code writes.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from lightning_app.cloud import deploy_monitoring as deploy
from lightning_app.inference import records
from lightning_app.monitor.cli import parser
from tests.conftest import REPO

ANSWER = {
    "prediction": "tumor",
    "probabilities": [{"label": "tumor", "probability": 0.9}, {"label": "no_tumor", "probability": 0.1}],
    "version": "0123456789ab",
    "in_distribution": {"ok": False, "score": 3.2, "threshold": 2.0},
}


def payloads() -> dict[str, dict]:
    """jsonPayload of each event as Cloud Logging stores it (special fields lifted out)."""
    prediction = records.prediction_record(
        answer=ANSWER,
        request_id="r",
        model_name="brain_mri",
        facts={"format": "JPEG", "bytes": 10},
        intensity_mean=0.3,
        intensity_std=0.2,
        embedding=[0.0] * 16,
        timing_ms={"decode": 1.0, "inference": 9.0},
    )
    bad = records.bad_request_record(
        code=400, message="empty input", request_id="r", model_name="m", version="v", size=0
    )
    verdict = {"event": "drift_verdict", "status": "drift", "drift": True, "failed_tests": ["embedding"]}
    special = ("severity", "time", records.LABELS)
    return {
        "prediction": {k: v for k, v in prediction.items() if k not in special},
        "bad_request": {k: v for k, v in bad.items() if k not in special},
        "drift_verdict": verdict,
    }


def resolve(payload: dict, path: str) -> object:
    node: object = payload
    for part in path.split("."):
        assert isinstance(node, dict) and part in node, f"jsonPayload.{path} not in the record"
        node = node[part]
    return node


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[list[str], Path]:
    out = tmp_path_factory.mktemp("monitoring")
    lines: list[str] = []
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert deploy.main(["--out", str(out)], env={"DRY_RUN": "1"}) == 0
    lines = buf.getvalue().strip().splitlines()
    return lines, out


def test_dry_run_prints_every_gcloud_command_with_placeholders_only(rendered) -> None:
    lines, out = rendered
    commands = [shlex.split(line) for line in lines]
    kinds = [" ".join(c[1:4]) for c in commands]
    assert kinds.count("logging metrics create") == 6
    assert kinds.count("monitoring policies create") == 4
    assert kinds[0] == "logging sinks create" and "run jobs replace" in kinds
    assert kinds[-1] == "scheduler jobs create"
    assert all(c[-2:] == ["--project", "project-id"] for c in commands)
    text = "\n".join(lines) + "".join(p.read_text() for p in out.iterdir())
    assert "${" not in text
    assert len(list(out.iterdir())) == 13


def test_every_spec_passes_its_schema_and_the_schemas_are_valid(rendered) -> None:
    _, out = rendered
    for path in out.iterdir():
        kind = path.name.split("-", 1)[0]
        schema = json.loads((REPO / "configs/monitoring/schemas" / f"{kind}.schema.json").read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)


def test_log_filters_and_extractors_read_fields_the_records_have(rendered) -> None:
    _, out = rendered
    events = payloads()
    checked = 0
    for path in out.iterdir():
        text = path.read_text()
        spec = yaml.safe_load(text)
        found = re.findall(r'jsonPayload\.event="(\w+)"', text)
        if not found:
            continue
        payload = events[found[0]]
        for field_path in re.findall(r"jsonPayload\.([\w.]+)", text):
            resolve(payload, field_path)
            checked += 1
        if spec.get("valueExtractor"):
            value = resolve(payload, spec["valueExtractor"][len("EXTRACT(jsonPayload.") : -1])
            assert isinstance(value, int | float)
    assert checked >= 15


def test_the_drift_job_runs_a_valid_drift_command(rendered) -> None:
    _, out = rendered
    job = yaml.safe_load((out / "run_job-drift_job.yaml").read_text())
    container = job["spec"]["template"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "lightning_app.monitor"]
    args = parser().parse_args(container["args"])
    assert args.hours == 24 and args.out.startswith("gs://")
    # the reference is whatever the registry's production alias names when the job runs
    registry = "gs://project-id-brain-mri/registry/brain_mri"
    assert (args.registry, args.alias, args.reference) == (registry, "production", "")
    assert all(source.startswith("gs://") and "{" in source for source in args.logs)


def test_settings_errors_are_one_line(tmp_path, capsys) -> None:
    assert deploy.main(["--out", str(tmp_path)], env={}) == 2  # no project, not a dry run
    assert (
        deploy.main(["--out", str(tmp_path)], env={"DRY_RUN": "1", "NOTIFICATION_CHANNELS": "email-me"}) == 2
    )
    assert deploy.main(["--out", str(tmp_path)], env={"PROJECT": "p", "PATH": "/nonexistent"}) == 2
    assert deploy.main(["--out", str(tmp_path)], env={"DRY_RUN": "1", "DRIFT_ALIAS": "prod"}) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 4 and all(e.startswith("error: ") for e in errors)
    assert "PROJECT" in errors[0] and "notificationChannels" in errors[1] and "gcloud not found" in errors[2]
    assert "unknown alias 'prod'" in errors[3]


def test_the_deploy_is_one_command_of_its_own(capsys) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["deploy"])  # the drift CLI stays read-only
    capsys.readouterr()
    make = (REPO / "Makefile").read_text()
    assert "python -m lightning_app.cloud.deploy_monitoring" in make
