"""LitServe beside TorchServe: the same answers, and what only the LitServe runtime does.

The shared contract (answers, 4xx errors, limits, explanations, metrics, prediction log) is
tested against both runtimes through the ``server`` fixture; here: both runtimes answer
the held-out scans identically, and the LitServe process's own start, stop and guards.
Real servers on 127.0.0.1, real scans, nothing mocked.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jsonschema
import pytest

from serve.cli import main
from serve.litserve_app import EXPLAIN_HEADER, MAX_REQUEST_BYTES
from tests.conftest import REPO, free_port
from tests.serve.serve_images import real_jpeg

OCTET = {"Content-Type": "application/octet-stream"}


def held_out(root: Path) -> list[Path]:
    with (root / "split.csv").open() as f:
        return [root / row["path"] for row in csv.DictReader(f) if row["split"] == "test"]


def answers(url: str, bodies: list[bytes]) -> list[dict]:
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda b: client.post(url, content=b, headers=OCTET), bodies))
    assert [r.status_code for r in responses] == [200] * len(bodies), [r.text for r in responses]
    return [r.json() for r in responses]


@pytest.mark.slow
def test_both_runtimes_answer_the_held_out_scans_identically(served_model, lit_served_model, small_br35h):
    paths = held_out(small_br35h)
    assert len(paths) >= 10
    bodies = [p.read_bytes() for p in paths]
    torchserve = answers(served_model.predict_url, bodies)
    litserve = answers(lit_served_model.predict_url, bodies)
    for path, ts, ls in zip(paths, torchserve, litserve, strict=True):
        assert ls["prediction"] == ts["prediction"], path
        assert [p["label"] for p in ls["probabilities"]] == [p["label"] for p in ts["probabilities"]]
        for a, b in zip(ls["probabilities"], ts["probabilities"], strict=True):
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-6), path
        assert {k: v for k, v in ls.items() if k != "probabilities" and k != "in_distribution"} == {
            k: v for k, v in ts.items() if k != "probabilities" and k != "in_distribution"
        }
        assert ls["in_distribution"]["ok"] == ts["in_distribution"]["ok"]


@pytest.mark.slow
def test_a_client_cannot_turn_a_prediction_into_an_explanation(lit_served_model):
    marked = {**OCTET, EXPLAIN_HEADER: "True"}
    response = httpx.post(lit_served_model.predict_url, content=real_jpeg(), headers=marked, timeout=60)
    assert response.status_code == 200
    assert "explanation" not in response.json()


@pytest.mark.slow
def test_a_body_over_the_request_limit_is_refused_unread(lit_served_model):
    body = b"\xff\xd8\xff" + bytes(MAX_REQUEST_BYTES)
    response = httpx.post(lit_served_model.predict_url, content=body, headers=OCTET, timeout=60)
    assert response.status_code == 413
    error = response.json()
    jsonschema.validate(error, json.loads((REPO / "docs" / "error.schema.json").read_text()))
    assert "too large" in error["message"]
    ping = httpx.get(f"{lit_served_model.inference_url}/ping", timeout=10)
    assert ping.json() == {"status": "Healthy"}


def test_an_unknown_runtime_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main({"SERVE_RUNTIME": "triton", "SERVE_MAR": str(tmp_path / "x.mar")}) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "SERVE_RUNTIME='triton'" in err and "litserve" in err


@pytest.mark.slow
def test_litserve_with_a_model_that_cannot_load_exits_non_zero_with_one_clear_line(tmp_path: Path) -> None:
    mar = tmp_path / "brain_mri.mar"
    with zipfile.ZipFile(mar, "w") as archive:  # an archive whose model files are missing
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"modelName": "brain_mri"}}))
        archive.writestr("model_meta.json", json.dumps({"backbone": "small_cnn"}))
    env = {
        **os.environ,
        "SERVE_RUNTIME": "litserve",
        "SERVE_MAR": str(mar),
        "PORT": str(free_port()),
        "SERVE_METRICS_PORT": str(free_port()),
        "SERVE_WORKDIR": str(tmp_path / "work"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "serve.litserve_app"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the model did not load"), result.stderr[-2000:]
