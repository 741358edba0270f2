"""The prediction log written by the handler, in-process (a stand-in TorchServe context).

The context is a stand-in (as in ``tests/serve/test_serve_handler.py``) so the stdout
lines can be read with ``capsys``; the real TorchServe path (log4j2, request ids, the
container's stdout) is checked in ``tests/serve/test_serve_monitoring.py``. Images are
real Br35H scans; the PCA basis is fitted on real scans' features.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_app.data.sources import embedded_br35h
from lightning_app.inference import artefacts, features, predlog, records
from lightning_app.inference.engine import InferenceEngine
from lightning_app.inference.settings import LogSettings, ServeSettings
from serve.handler import BrainMRIHandler
from tests.serve.serve_images import BAD_INPUTS, real_jpeg
from tests.serve.test_serve_handler import FakeContext, model_dir


class IdContext(FakeContext):
    """The stand-in context plus TorchServe's request ids and response headers."""

    def __init__(self, model_dir: Path, ids: list[str]) -> None:
        super().__init__(model_dir)
        self.ids = ids
        self.response_headers: dict[int, dict[str, str]] = {}

    def get_request_id(self, idx: int = 0) -> str | None:
        return self.ids[idx]

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.response_headers.setdefault(idx, {})[key] = value


def scans(n: int) -> list[bytes]:
    return [p.read_bytes() for p in sorted((embedded_br35h() / "no").glob("*.jpg"))[:n]]


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    """Export-like model dir with a PCA basis fitted on real scans' features."""
    directory = model_dir(tmp_path, ["no_tumor", "tumor"])
    engine = InferenceEngine(directory)
    pixels = np.stack([engine.decode(b) for b in scans(40)])
    projection, _ = features.Projection.fit(engine.forward(pixels).features, 16)
    torch.save(
        {k: torch.from_numpy(v) for k, v in projection.state().items()}, directory / artefacts.EMBEDDING_PCA
    )
    return directory


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_every_answer_and_refusal_leaves_one_json_line(exported: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("PREDLOG_SAMPLE", raising=False)
    bad_body, bad_code, _ = BAD_INPUTS["not_an_image"]()
    context = IdContext(exported, ["rid-0", "rid-1", "rid-2"])
    service = BrainMRIHandler()
    service.initialize(context)
    capsys.readouterr()
    bodies = service.handle([{"body": real_jpeg()}, {"body": bad_body}, {"data": scans(1)[0]}], context)
    records = lines(capsys.readouterr().out)
    assert [r["request_id"] for r in records] == ["rid-1", "rid-0", "rid-2"]  # refusals as they happen
    refused, first, second = records
    assert refused["event"] == "bad_request" and refused["severity"] == "WARNING"
    assert refused["error"] == {"status": bad_code, "type": "not_an_image"}
    for record, body in ((first, bodies[0]), (second, bodies[2])):
        answer = json.loads(body)
        assert record["severity"] == "INFO" and record["event"] == "prediction"
        assert record["logging.googleapis.com/labels"]["model_version"] == answer["version"]
        assert record["prediction"]["class"] == answer["prediction"]
        assert record["prediction"]["probabilities"] == pytest.approx(
            {p["label"]: p["probability"] for p in answer["probabilities"]}, abs=1e-6
        )
        assert len(record["embedding"]) == 16
        assert record["input"]["format"] == "JPEG" and record["input"]["width"] > 100
        assert 0 < record["input"]["intensity_mean"] < 1 and 0 < record["input"]["intensity_std"] < 1
    assert first["input"]["bytes"] == len(real_jpeg())
    assert context.response_headers[0]["X-Request-Id"] == "rid-0"
    assert context.response_headers[1]["X-Request-Id"] == "rid-1"


def test_the_line_holds_no_pixels_and_no_client_names(exported: Path, capsys) -> None:
    context = IdContext(exported, ["r"])
    context.headers = [{"Content-Disposition": 'form-data; name="data"; filename="patient-smith.jpg"'}]
    service = BrainMRIHandler()
    service.initialize(context)
    capsys.readouterr()
    service.handle([{"data": real_jpeg(), "filename": "patient-smith.jpg"}], context)
    out = capsys.readouterr().out
    (record,) = lines(out)
    assert "smith" not in out
    assert len(out) < 3000  # a 64x64 image alone would be 4096 numbers
    numbers = [v for v in json.dumps(record).replace("[", ",").replace("]", ",").split(",") if v.strip()]
    assert len(numbers) < 120


def test_sampling_and_opt_out(exported: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("PREDLOG_SAMPLE", "0")
    context = IdContext(exported, ["a", "b"])
    service = BrainMRIHandler()
    service.initialize(context)
    capsys.readouterr()
    service.handle([{"body": real_jpeg()}, {"body": b""}], context)
    assert [r["event"] for r in lines(capsys.readouterr().out)] == ["bad_request"]  # refusals always
    monkeypatch.setenv("PREDLOG_ENABLED", "0")
    service = BrainMRIHandler()
    service.initialize(context)
    capsys.readouterr()
    service.handle([{"body": real_jpeg()}, {"body": b""}], context)
    assert lines(capsys.readouterr().out) == []


def test_settings_from_env() -> None:
    assert ServeSettings.from_env({}).log == LogSettings(enabled=True, sample=1.0)
    assert ServeSettings.from_env({"PREDLOG_ENABLED": "false"}).log.enabled is False
    assert ServeSettings.from_env({"PREDLOG_SAMPLE": "7"}).log.sample == 1.0
    assert ServeSettings.from_env({"PREDLOG_SAMPLE": "nope"}).log.sample == 1.0
    half = LogSettings(sample=0.5)
    kept = sum(half.keep(random.Random(i)) for i in range(400))
    assert 150 < kept < 250


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_every_refusal_gets_a_fixed_error_type(exported: Path, capsys, name: str) -> None:
    body, code, _ = BAD_INPUTS[name]()
    context = IdContext(exported, ["x"])
    service = BrainMRIHandler()
    service.initialize(context)
    capsys.readouterr()
    service.handle([{"body": body}], context)
    (record,) = lines(capsys.readouterr().out)
    assert record["error"]["status"] == code
    assert record["error"]["type"] in {t for _, t in records.ERROR_TYPES}


def test_a_broken_stdout_never_costs_the_answer(exported: Path) -> None:
    class Closed(io.StringIO):
        def write(self, s: str) -> int:
            raise OSError("stdout closed")

    context = IdContext(exported, ["x", "y"])
    service = BrainMRIHandler()
    service.initialize(context)
    assert service.log is not None
    service.log.stream = Closed()
    bodies = service.handle([{"body": real_jpeg()}, {"body": b""}], context)
    assert json.loads(bodies[0])["prediction"] in {"no_tumor", "tumor"}
    assert json.loads(bodies[1])["code"] == 400


def test_records_without_a_projection_have_no_embedding(tmp_path: Path) -> None:
    engine = InferenceEngine(model_dir(tmp_path, ["no_tumor", "tumor"]))
    log = predlog.PredictionLog(engine, "brain_mri", stream=io.StringIO())
    pixels = np.stack([engine.decode(real_jpeg())])
    forward = engine.forward(pixels)
    (record,) = log.predictions(
        [records.Request(0, real_jpeg(), None, 1.0)], pixels, engine.answers(forward), 2.0, forward=forward
    )
    assert record["embedding"] is None and record["timing_ms"] == {"decode": 1.0, "inference": 2.0}
    assert records.dumps({"x": float("nan")}) is None


def test_intensity_is_the_mean_and_std_of_each_preprocessed_image() -> None:
    half = torch.zeros(1, 1, 4, 4, dtype=torch.uint8)
    half[..., 2:] = 255  # half black, half white: mean 0.5, std 0.5
    flat = torch.full((1, 1, 4, 4), 51, dtype=torch.uint8)  # one grey level: mean 0.2, std 0
    means, stds = features.intensity(torch.cat([half, flat]))
    assert means == pytest.approx([0.5, 0.2]) and stds == pytest.approx([0.5, 0.0])


def test_the_log_embeds_the_forward_it_is_handed_and_wraps_nothing(exported: Path) -> None:
    engine = InferenceEngine(exported)
    backend = engine.backend
    log = predlog.PredictionLog(engine, "brain_mri", stream=io.StringIO())
    data = scans(3)
    pixels = np.stack([engine.decode(b) for b in data])
    forward = engine.forward(pixels)
    requests = [records.Request(i, b, None, 0.0) for i, b in enumerate(data)]
    logged = log.predictions(requests, pixels, engine.answers(forward), 0.0, forward=forward)
    assert engine.backend is backend  # nothing swaps the engine's backend
    projection = features.Projection.load(exported)
    assert projection is not None
    for record, row in zip(logged, projection(forward.features), strict=True):
        assert record["embedding"] == pytest.approx(row.tolist(), abs=1e-4)
    other = engine.forward(pixels[:2])  # a pass that is not this batch's: no embedding
    (first, *_) = log.predictions(requests, pixels, engine.answers(forward), 0.0, forward=other)
    assert first["embedding"] is None


def test_an_explanation_is_logged_with_its_own_pass_embedding(exported: Path, capsys) -> None:
    context = IdContext(exported, ["p", "e"])
    context.headers = [{}, {"explain": "True"}]
    service = BrainMRIHandler()
    service.initialize(context)
    capsys.readouterr()
    image = real_jpeg()
    bodies = service.handle([{"body": image}, {"body": image}], context)
    assert "explanation" in json.loads(bodies[1]) and "explanation" not in json.loads(bodies[0])
    predicted, explained = lines(capsys.readouterr().out)  # predictions first, then explanations
    assert (predicted["request_id"], explained["request_id"]) == ("p", "e")
    assert len(explained["embedding"]) == 16
    assert explained["embedding"] == pytest.approx(predicted["embedding"], abs=2e-4)
