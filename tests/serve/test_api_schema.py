"""The API page's JSON schemas (docs/*.schema.json) describe what a real TorchServe answers."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import jsonschema
import pytest

from tests.conftest import REPO
from tests.serve.serve_images import real_jpeg


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def schema(name: str) -> dict:
    return json.loads((REPO / "docs" / name).read_text())


@pytest.mark.slow
def test_answers_and_errors_match_the_documented_schemas(server) -> None:
    status, answer = post(server.predict_url, real_jpeg())
    assert status == 200
    jsonschema.validate(answer, schema("prediction.schema.json"))
    status, error = post(server.predict_url, b"not an image")
    assert 400 <= status < 500
    jsonschema.validate(error, schema("error.schema.json"))
    with pytest.raises(jsonschema.ValidationError):  # the schema does reject a wrong shape
        jsonschema.validate(
            {"prediction": "tumor", "probabilities": {"tumor": 1.0}}, schema("prediction.schema.json")
        )
