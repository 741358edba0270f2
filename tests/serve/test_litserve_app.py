"""The LitServe adapter in-process, for fast feedback (the real LitServe: test_serve_litserve.py).

HTTP parsing runs through real Starlette/FastAPI (``TestClient``) with the adapter's own
dependency, middleware and error handlers; LitServe's queue between its API server and its
workers is left out: the API's ``decode_request -> batch -> predict -> unbatch ->
encode_response`` chain is called as LitServe's batched loop calls it. The model dir holds
what export writes (random small-CNN weights); the images are real Br35H scans.
"""

from __future__ import annotations

import inspect
import json
import zipfile
from pathlib import Path
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from lightning_app.inference.metrics import ModelMetrics
from lightning_app.inference.service import Incoming
from lightning_app.inference.settings import ServeSettings
from serve import litserve_app
from serve.handler import BrainMRIHandler
from serve.litserve_app import (
    EXPLAIN_HEADER,
    MAX_REQUEST_BYTES,
    BrainMRIAPI,
    ExplainRoute,
    add_error_handlers,
    build_server,
    read_incoming,
    unpack,
)
from serve.litserve_metrics import PrometheusCache
from serve.litserve_workers import WorkerLost
from tests.inference.model_dirs import write_model_dir
from tests.serve.serve_images import BAD_INPUTS, real_jpeg
from tests.serve.test_serve_handler import FakeContext

OCTET = {"Content-Type": "application/octet-stream"}


def described(incoming: Incoming) -> dict:
    row = {k: (f"{len(v)} bytes" if isinstance(v, bytes) else v) for k, v in incoming.row.items()}
    return {"row": row, "form": incoming.form, "explain": incoming.explain, "target": incoming.target}


@pytest.fixture(scope="module")
def client() -> TestClient:
    """A FastAPI app with the adapter's request parsing, explanation route and error handlers."""
    app = FastAPI()
    app.add_middleware(ExplainRoute, model_name="brain_mri")
    add_error_handlers(app)

    @app.post("/predictions/brain_mri")
    async def parsed(incoming: Annotated[Incoming, Depends(read_incoming)]) -> dict:
        return described(incoming)

    @app.get("/lost")
    async def lost() -> None:
        raise WorkerLost(1)  # as LitServe's request handler raises a dead worker's answer

    return TestClient(app)


def test_http_requests_become_the_cores_incoming_rows(client: TestClient) -> None:
    image = real_jpeg()
    raw = client.post("/predictions/brain_mri", content=image, headers=OCTET).json()
    assert raw == {"row": {"body": f"{len(image)} bytes"}, "form": False, "explain": False, "target": None}
    multipart = client.post(
        "/predictions/brain_mri", files={"data": ("scan.jpg", image, "image/jpeg")}, data={"target": "1"}
    ).json()
    assert multipart["row"] == {"data": f"{len(image)} bytes", "target": "1"}
    assert client.post("/predictions/brain_mri", data={"image": "x"}).json()["form"] is True
    assert client.post("/predictions/brain_mri", json={"image": "x"}).json()["row"] == {
        "body": {"image": "x"}
    }


def test_only_the_explanations_path_marks_an_explanation(client: TestClient) -> None:
    headers = {**OCTET, "X-Target": "no_tumor"}
    explained = client.post("/explanations/brain_mri", content=b"x", headers=headers).json()
    assert explained["explain"] is True and explained["target"] == "no_tumor"
    forged = client.post("/predictions/brain_mri", content=b"x", headers={**headers, EXPLAIN_HEADER: "True"})
    assert forged.json()["explain"] is False and forged.json()["target"] is None


def test_a_body_over_the_request_limit_is_a_413_json(client: TestClient) -> None:
    response = client.post("/predictions/brain_mri", content=bytes(MAX_REQUEST_BYTES + 1), headers=OCTET)
    assert response.status_code == 413
    assert response.json()["type"] == "BadInput" and "too large" in response.json()["message"]
    unknown = client.post("/predictions/other", content=b"x", headers=OCTET)
    assert unknown.status_code == 404 and unknown.json()["code"] == 404


def test_a_request_lost_with_its_worker_gets_the_overload_refusals_json_503(client: TestClient) -> None:
    response = client.get("/lost")
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    body = response.json()
    assert body["code"] == 503 and body["type"] == "ServiceUnavailable" and "worker 1" in body["message"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("litserve") / "model")


@pytest.fixture(scope="module")
def api(model_dir: Path) -> BrainMRIAPI:
    api = BrainMRIAPI(model_dir, ServeSettings(max_image_bytes=2**20))
    api.setup("cpu")  # registers the model metrics in this process's registry: once per module
    return api


def test_a_mixed_batch_gets_the_handlers_answers(api: BrainMRIAPI, model_dir: Path) -> None:
    image = real_jpeg()
    bodies = [image, BAD_INPUTS["not_an_image"]()[0], image, b""]
    incoming = [Incoming({"body": b}, request_id=f"r{i}") for i, b in enumerate(bodies)]
    incoming.append(Incoming({"data": image}, explain=True, target="tumor", request_id="r4"))
    replies = api.unbatch(api.predict(api.batch([api.decode_request(i) for i in incoming])))
    responses = [api.encode_response(r) for r in replies]
    assert [r.status_code for r in responses] == [200, 400, 200, 400, 200]
    assert [r.headers["X-Request-Id"] for r in responses] == ["r0", "r1", "r2", "r3", "r4"]
    assert all(r.media_type == "application/json" for r in responses)
    handler = BrainMRIHandler()
    context = FakeContext(model_dir, [{}, {}, {}, {}, {"explain": "True", "X-Target": "tumor"}])
    handler.initialize(context)
    expected = handler.handle([{"body": b} for b in bodies] + [{"data": image}], context)
    assert [json.loads(r.body) for r in responses] == [json.loads(e) for e in expected]
    assert json.loads(responses[4].body)["explanation"]["target"] == "tumor"
    one = api.encode_response(api.predict(incoming[0]))  # batching off: one request, one reply
    # the same answer; int8 kernels may round a batch of one differently in the 11th digit
    assert floats_close(json.loads(one.body), json.loads(expected[0]), 1e-6)


def floats_close(a: object, b: object, tolerance: float) -> bool:
    """``a == b`` for JSON values, numbers (not booleans) within ``tolerance`` of each other."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(floats_close(a[k], b[k], tolerance) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(floats_close(x, y, tolerance) for x, y in zip(a, b, strict=True))
    if not (isinstance(a, float) or isinstance(b, float)):
        return a == b
    if isinstance(a, bool) or isinstance(b, bool):
        return False  # a flag never equals a number
    return isinstance(a, int | float) and isinstance(b, int | float) and abs(a - b) <= tolerance


def test_the_metrics_carry_torchserves_names_and_labels() -> None:
    registry = CollectorRegistry()
    metrics = ModelMetrics(PrometheusCache(registry), "brain_mri")
    metrics.prediction({"prediction": "tumor", "probabilities": [{"label": "tumor", "probability": 0.9}]})
    metrics.bad_request(400, "empty")
    metrics.decode(0.01)
    text = generate_latest(registry).decode()
    assert 'model_predictions_total{Class="tumor",ModelName="brain_mri"} 1.0' in text
    assert 'model_bad_requests_total{ErrorType="empty",ModelName="brain_mri",Status="400"} 1.0' in text
    assert 'model_decode_seconds_count{ModelName="brain_mri"} 1.0' in text


def test_a_mar_is_unpacked_with_its_config_and_name(model_dir: Path, tmp_path: Path) -> None:
    mar = tmp_path / "brain_mri.mar"
    with zipfile.ZipFile(mar, "w") as archive:
        for path in model_dir.iterdir():
            archive.write(path, path.name)
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"modelName": "brain_mri"}}))
        archive.writestr("model-config.yaml", "minWorkers: 1\nbatchSize: 4\nmaxBatchDelay: 5\n")
    unpacked = unpack(mar, tmp_path / "model")
    assert litserve_app.model_config(unpacked)["batchSize"] == 4
    assert litserve_app.model_name_of(unpacked) == "brain_mri"
    server = build_server(unpacked, ServeSettings())
    ping = TestClient(server.app).get("/ping")  # no worker has started: not healthy yet
    assert ping.status_code == 500 and ping.json() == {"status": "Unhealthy"}
    predict = next(r for r in server.app.routes if getattr(r, "path", "") == "/predictions/brain_mri")
    dependencies = [d.call for d in predict.dependant.dependencies]  # type: ignore[attr-defined]
    assert dependencies and all(inspect.iscoroutinefunction(call) for call in dependencies), (
        "a synchronous dependency costs every request a thread-pool hop"
    )
    evil = tmp_path / "evil.mar"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../outside.txt", "x")
    with pytest.raises(ValueError, match="outside"):
        unpack(evil, tmp_path / "evil")


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"SERVE_MAR": "no/such.mar"}, "model archive not found"),
        ({"SERVE_PRECISION": "fp8"}, "SERVE_PRECISION='fp8'"),
        ({"SERVE_MAR": __file__, "PORT": "eighty"}, "PORT='eighty': expected a whole number from 1 to 65535"),
        ({"SERVE_MAR": __file__}, "File is not a zip file"),
    ],
)
def test_a_start_that_cannot_work_is_one_line_and_exit_2(
    env: dict, words: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert litserve_app.main({**env, "SERVE_WORKDIR": str(tmp_path)}) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and words in err
