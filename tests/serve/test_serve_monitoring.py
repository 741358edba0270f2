"""Monitoring against real servers: the prediction log on stdout and the model metrics.

Nothing is mocked: ``server`` is the shared TorchServe 0.12 (``served_model``, with
``serve/log4j2.xml`` and ``serve/metrics.yaml`` as ``python -m serve`` runs it), then the
shared LitServe (``lit_served_model``); their stdout (what Cloud Run would send to Cloud
Logging) is captured in the work folder's log.
"""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from lightning_app.inference import metrics as model_metrics
from lightning_app.inference.records import LABELS
from tests.serve.serve_images import BAD_INPUTS, real_jpeg

pytestmark = pytest.mark.slow
OCTET = {"Content-Type": "application/octet-stream"}


def stdout_records(server, request_id: str, timeout: float = 15.0) -> tuple[dict, list[str]]:
    """The JSON line of ``request_id`` on the server's stdout, and every stdout line."""
    deadline = time.monotonic() + timeout
    while True:
        text = server.log.read_text(errors="replace")
        for line in text.splitlines():
            if line.startswith("{") and request_id in line:
                return json.loads(line), text.splitlines()
        if time.monotonic() > deadline:
            raise AssertionError(f"no stdout line for request {request_id}:\n{server.log_tail(40)}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=60) as c:
        yield c


def test_a_served_prediction_leaves_one_unprefixed_json_line_on_stdout(server, client) -> None:
    image = real_jpeg()
    response = client.post(server.predict_url, content=image, headers=OCTET)
    assert response.status_code == 200, response.text
    answer = response.json()
    request_id = response.headers["X-Request-Id"]
    record, out = stdout_records(server, request_id)
    assert record["request_id"] == request_id
    assert record["severity"] == "INFO" and record["event"] == "prediction" and record["schema"] == 1
    assert record[LABELS] == {
        "component": "prediction-log",
        "model": "brain_mri",
        "model_version": answer["version"],
    }
    assert record["model"] == {"name": "brain_mri", "version": answer["version"]}
    assert record["prediction"]["class"] == answer["prediction"]
    served = {p["label"]: p["probability"] for p in answer["probabilities"]}
    assert record["prediction"]["probabilities"] == pytest.approx(served, abs=1e-6)
    assert record["input"]["bytes"] == len(image) and record["input"]["format"] == "JPEG"
    assert len(record["embedding"]) == 16  # the mar's PCA basis (export step on the training data)
    assert record["timing_ms"]["inference"] > 0
    assert len(json.dumps(record)) < 3000  # no pixels
    # The same line is not printed a second time with TorchServe's log prefix, and the
    # per-request chatter (access log, metrics lines, thread traces) stays off stdout.
    assert not [line for line in out if "MODEL_LOG - {" in line]
    assert [line for line in out if request_id in line] == [json.dumps(record, separators=(",", ":"))]


def test_a_refused_request_logs_its_error_type(server, client) -> None:
    body, code, _ = BAD_INPUTS["truncated_jpeg"]()
    response = client.post(server.predict_url, content=body, headers=OCTET)
    assert response.status_code == code
    record, _ = stdout_records(server, response.headers["X-Request-Id"])
    assert record["event"] == "bad_request" and record["severity"] == "WARNING"
    assert record["error"] == {"status": code, "type": "corrupt"}


def scrape(server) -> str:
    return httpx.get(f"{server.metrics_url}/metrics", timeout=10).text


def value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for match in re.finditer(rf"^{name}\{{([^}}]*)\}} ([0-9.eE+-]+)$", text, re.M):
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_model_metrics_on_the_prometheus_endpoint(server, client) -> None:
    before = scrape(server)
    answers = [client.post(server.predict_url, content=real_jpeg(), headers=OCTET) for _ in range(3)]
    predicted = answers[0].json()["prediction"]
    assert all(a.json()["prediction"] == predicted for a in answers)
    client.post(server.predict_url, content=b"", headers=OCTET)
    deadline = time.monotonic() + 15
    while True:
        after = scrape(server)
        grew = value(after, "model_predictions_total", Class=predicted) - value(
            before, "model_predictions_total", Class=predicted
        )
        if grew >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert grew == 3
    assert value(after, "model_bad_requests_total", Status="400", ErrorType="empty") >= 1
    assert (
        value(after, "model_prediction_uncertainty_count")
        - value(before, "model_prediction_uncertainty_count")
        == 3
    )
    assert value(after, "model_prediction_uncertainty_bucket", le="+Inf") >= 3
    assert value(after, "model_decode_seconds_count") >= 3
    assert value(after, "model_inference_seconds_sum") > 0
    assert 'ModelName="brain_mri"' in after


def test_metrics_yaml_declares_what_the_handler_reports() -> None:
    import yaml

    from tests.conftest import REPO

    spec = yaml.safe_load((REPO / "serve/metrics.yaml").read_text())["model_metrics"]
    declared = {m["name"]: (kind, m["dimensions"]) for kind, items in spec.items() for m in items}
    for name, (kind, dims) in model_metrics.METRICS.items():
        assert declared[name] == (kind, dims), name
