"""The TorchServe client against real sockets: a closed port and a tiny scripted HTTP server.

Nothing is mocked: each case is a real HTTP exchange on 127.0.0.1 (the scripted server
stands in for TorchServe's error answers, whose exact bodies the serving tests pin).
"""

from __future__ import annotations

import time

import pytest

from lightning_app.ui.client import UNAVAILABLE, InferenceError, TorchServeClient
from lightning_app.ui.settings import Settings
from tests.conftest import free_port

from .conftest import Reply, Scripted

SCAN = b"\xff\xd8\xff\xe0 not really decoded by the client \x00\x01"
ANSWER = {
    "prediction": "tumor",
    "probabilities": [{"label": "tumor", "probability": 0.9}, {"label": "no_tumor", "probability": 0.1}],
    "model": "brain_mri",
    "version": "3",
}


def client_for(url: str, *, management: str | None = None, timeout: float = 5.0) -> TorchServeClient:
    return TorchServeClient(Settings(inference_url=url, management_url=management, timeout=timeout))


def predict_error(client: TorchServeClient, data: bytes = SCAN) -> str:
    with pytest.raises(InferenceError) as info:
        client.predict(data)
    return str(info.value)


def test_prediction_sends_the_bytes_unchanged_and_ranks_classes(scripted_server: Scripted) -> None:
    reversed_answer = {**ANSWER, "probabilities": ANSWER["probabilities"][::-1]}
    scripted_server.replies["/predictions/brain_mri"] = Reply.json(200, reversed_answer)
    prediction = client_for(scripted_server.url).predict(SCAN)
    method, path, headers, body = scripted_server.received[-1]
    assert (method, path, body) == ("POST", "/predictions/brain_mri", SCAN)
    assert headers["Content-Type"] == "application/octet-stream"
    assert prediction.label == "tumor"
    assert list(prediction.probabilities) == ["tumor", "no_tumor"]
    assert prediction.model_name == "brain_mri"
    assert prediction.model_version == "3"
    assert prediction.latency_ms > 0


def test_plain_class_to_probability_answer_is_understood(scripted_server: Scripted) -> None:
    scripted_server.replies["/predictions/brain_mri"] = Reply.json(200, {"no_tumor": 0.2, "tumor": 0.8})
    prediction = client_for(scripted_server.url).predict(SCAN)
    assert prediction.label == "tumor"
    assert prediction.probabilities == {"tumor": 0.8, "no_tumor": 0.2}
    assert prediction.model_version is None


@pytest.mark.parametrize(
    "answer", [["not", "probabilities"], {"probabilities": [{"label": "x"}]}, {"a": "b"}, "plain text"]
)
def test_answer_without_probabilities_is_a_readable_error(scripted_server: Scripted, answer: object) -> None:
    scripted_server.replies["/predictions/brain_mri"] = Reply.json(200, answer)
    assert "not with class probabilities" in predict_error(client_for(scripted_server.url))


def test_closed_port_means_service_unavailable() -> None:
    message = predict_error(client_for(f"http://127.0.0.1:{free_port()}"))
    assert message.startswith(UNAVAILABLE)
    assert "is TorchServe running?" in message


def test_a_hanging_backend_times_out_with_a_readable_message(scripted_server: Scripted) -> None:
    scripted_server.replies["/predictions/brain_mri"] = Reply.json(200, ANSWER, delay_s=3.0)
    start = time.monotonic()
    message = predict_error(client_for(scripted_server.url, timeout=0.5))
    assert time.monotonic() - start < 2.5, "the client must give up at its timeout, not wait for the answer"
    assert message.startswith(UNAVAILABLE)
    assert "within 0.5 s" in message


def ts_error(code: int, message: str) -> Reply:
    """An error body shaped like TorchServe's (and our handler's) own."""
    return Reply.json(code, {"code": code, "type": "BadInput", "message": message})


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (ts_error(400, "not an image"), "rejected the file (HTTP 400): not an image"),
        (
            ts_error(413, "image too large: 9 bytes"),
            "too large for the inference service (HTTP 413): image too",
        ),
        (ts_error(404, "Model not found"), "The model 'brain_mri' is not served"),
        (ts_error(503, "No worker is available"), f"{UNAVAILABLE}: the model has no ready worker"),
        (
            Reply(500, b"<html>Internal   error</html>", "text/html"),
            "failed (HTTP 500): <html>Internal error</html>",
        ),
        (Reply(502, b"", "text/plain"), "failed (HTTP 502)."),
    ],
)
def test_backend_errors_become_sentences(scripted_server: Scripted, reply: Reply, expected: str) -> None:
    scripted_server.replies["/predictions/brain_mri"] = reply
    message = predict_error(client_for(scripted_server.url))
    assert expected in message
    assert "Traceback" not in message


def test_empty_upload_is_refused_without_calling_the_backend(scripted_server: Scripted) -> None:
    assert "The file is empty" in predict_error(client_for(scripted_server.url), b"")
    assert scripted_server.received == []


def test_ping_reports_health(scripted_server: Scripted) -> None:
    client = client_for(scripted_server.url)
    scripted_server.replies["/ping"] = Reply.json(200, {"status": "Healthy"})
    assert client.ping().healthy
    scripted_server.replies["/ping"] = Reply.json(500, {"status": "Unhealthy"})
    health = client.ping()
    assert (health.healthy, health.status) == (False, "Unhealthy")
    scripted_server.replies["/ping"] = Reply.json(400, {"code": 400, "message": "Token authorization failed"})
    assert "Token authorization failed" in client.ping().status
    scripted_server.replies["/ping"] = Reply(200, b"ok", "text/plain")
    assert not client.ping().healthy


def test_ping_of_a_closed_port_is_unhealthy_not_an_exception() -> None:
    health = client_for(f"http://127.0.0.1:{free_port()}").ping()
    assert not health.healthy
    assert "unreachable" in health.status


def test_model_info_from_the_management_api(scripted_server: Scripted) -> None:
    description = [
        {
            "modelName": "brain_mri",
            "modelVersion": "1.0",
            "batchSize": 8,
            "workers": [{"id": "9000", "status": "READY"}, {"id": "9001", "status": "UNLOADING"}],
        }
    ]
    scripted_server.replies["/models/brain_mri"] = Reply.json(200, description)
    info = client_for("http://127.0.0.1:1", management=scripted_server.url).model_info()
    assert info is not None
    assert (info.name, info.version, info.workers_ready, info.workers_total) == ("brain_mri", "1.0", 1, 2)
    assert info.raw["batchSize"] == 8


def test_model_info_is_none_when_management_is_off_unreachable_or_odd(scripted_server: Scripted) -> None:
    assert client_for(scripted_server.url, management=None).model_info() is None
    assert client_for(scripted_server.url, management=f"http://127.0.0.1:{free_port()}").model_info() is None
    scripted_server.replies["/models/brain_mri"] = Reply.json(200, {"not": "a list"})
    assert client_for(scripted_server.url, management=scripted_server.url).model_info() is None


def png_b64(size: int = 8) -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (size, size), 200).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_explanation_answer_carries_heatmap_and_ood_verdict(scripted_server: Scripted) -> None:
    answer = {
        **ANSWER,
        "in_distribution": {"ok": False, "score": 41.5, "threshold": 20.0},
        "warning": "This image does not look like the brain MRIs the model was trained on",
        "explanation": {"method": "cam", "target": "tumor", "encoding": "png-base64", "heatmap": png_b64()},
    }
    scripted_server.replies["/explanations/brain_mri"] = Reply.json(200, answer)
    prediction = client_for(scripted_server.url).explain(SCAN)
    method, path, _, body = scripted_server.received[-1]
    assert (method, path, body) == ("POST", "/explanations/brain_mri", SCAN)
    assert prediction.in_distribution is not None and not prediction.in_distribution.ok
    assert prediction.in_distribution.score == 41.5
    assert prediction.warning is not None and "does not look like" in prediction.warning
    assert prediction.heatmap is not None and prediction.heatmap.png.startswith(b"\x89PNG")
    assert prediction.heatmap.target == "tumor"


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"explanation": {"encoding": "png-base64", "heatmap": "%%% not base64"}},
        {"explanation": {"encoding": "png-base64", "heatmap": "aGVsbG8="}},  # base64, not a PNG
        {"explanation": {"encoding": "float-grid", "heatmap": [1, 2]}},
        {"in_distribution": {"ok": "yes", "score": 1, "threshold": 2}},
        {"in_distribution": {"ok": True, "score": None, "threshold": 2}},
        {"decision": {"label": 3, "score": 0.5, "threshold": 0.2}},
        {"decision": {"label": "tumor", "score": "high", "threshold": 0.2}},
    ],
)
def test_odd_or_missing_extras_are_ignored_not_fatal(scripted_server: Scripted, extra: dict) -> None:
    scripted_server.replies["/explanations/brain_mri"] = Reply.json(200, {**ANSWER, **extra})
    prediction = client_for(scripted_server.url).explain(SCAN)
    assert prediction.label == "tumor"
    assert prediction.heatmap is None and prediction.in_distribution is None and prediction.decision is None


def test_the_screening_decision_is_read_from_the_answer(scripted_server: Scripted) -> None:
    decision = {"label": "tumor", "score": 0.31, "threshold": 0.12, "target": "sensitivity >= 97%"}
    answer = {**ANSWER, "prediction": "no_tumor", "decision": decision}
    scripted_server.replies["/predictions/brain_mri"] = Reply.json(200, answer)
    prediction = client_for(scripted_server.url).predict(SCAN)
    assert prediction.decision is not None
    assert (prediction.decision.label, prediction.decision.score) == ("tumor", 0.31)
    assert prediction.decision.threshold == 0.12 and prediction.decision.target == "sensitivity >= 97%"
