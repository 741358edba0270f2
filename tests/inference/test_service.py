"""The shared serving core in-process: fuzzed requests, and a prediction log that cannot write.

Real pieces: a small CNN exported as ``model_dir`` writes it, real Br35H scans mutated by
hypothesis (``tests/fuzz_seeds.py``), ``/dev/full`` as the full log destination (every
write fails with ``ENOSPC``) and ``prometheus_client`` for the metrics, as LitServe runs it.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from lightning_app.inference.service import Incoming, ModelService
from lightning_app.inference.settings import ServeSettings
from serve.litserve_metrics import PrometheusCache
from tests.fuzz_seeds import mutated, seeds
from tests.serve.test_serve_handler import model_dir


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> ModelService:
    loaded = ModelService()
    directory = model_dir(tmp_path_factory.mktemp("model"), ["no_tumor", "tumor"])
    loaded.load(directory, ServeSettings(max_image_bytes=2**20))
    assert loaded.log is not None
    loaded.log.stream = io.StringIO()
    return loaded


@settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bodies=st.lists(mutated(), min_size=1, max_size=3),
    kind=st.sampled_from(["body", "data", "form", "explain"]),
)
def test_fuzzed_requests_get_an_answer_or_a_4xx_json_never_an_exception(
    service: ModelService, bodies: list[bytes], kind: str
) -> None:
    assert service.log is not None and isinstance(service.log.stream, io.StringIO)
    service.log.stream.seek(0)
    service.log.stream.truncate()
    batch = [
        Incoming(
            {"data" if kind == "data" else "body": body},
            form=kind == "form",
            explain=kind == "explain",
            request_id=f"r{i}",
        )
        for i, body in enumerate(bodies)
    ]
    replies = service.serve(batch)
    assert len(replies) == len(batch)
    assert len(service.log.stream.getvalue().splitlines()) == len(batch), "one log line per request"
    for reply in replies:
        assert reply.status in (200, 400, 413, 415)
        answer = json.loads(reply.body)
        if reply.status == 200:
            assert answer["prediction"] in ("no_tumor", "tumor")
        else:
            assert answer["code"] == reply.status and answer["message"]


def test_a_full_log_destination_costs_no_answer_and_is_counted(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    service = ModelService()
    service.load(
        model_dir(tmp_path, ["no_tumor", "tumor"]), ServeSettings(), metrics_cache=PrometheusCache(registry)
    )
    assert service.log is not None
    full = open("/dev/full", "w")  # noqa: SIM115 - every write fails: "No space left on device"
    service.log.stream = full
    good = seeds()["png"]
    replies = service.serve([Incoming({"body": good}), Incoming({"body": b""}), Incoming({"body": good})])
    with contextlib.suppress(OSError):  # closing flushes what the failed writes left
        full.close()
    assert [r.status for r in replies] == [200, 400, 200]
    assert json.loads(replies[0].body)["prediction"] in ("no_tumor", "tumor")
    text = generate_latest(registry).decode()
    # one failed write for the batch's answers, one for the refused request's record
    assert 'model_log_failures_total{ModelName="brain_mri"} 2.0' in text
    assert "model_predictions_total{Class=" in text


def test_a_requests_repr_names_it_without_the_scan() -> None:
    """LitServe formats every request into a debug line (logged or not): no image bytes in it."""
    scan = seeds()["jpeg-original"]
    text = repr(Incoming({"body": scan}, explain=True, request_id="r-1"))
    assert "r-1" in text and "explain=True" in text
    assert repr(scan)[:40] not in text and len(text) < 200
