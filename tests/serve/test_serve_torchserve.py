"""The REST contract against real servers on 127.0.0.1 serving a .mar built in this session.

Nothing is mocked: the model is the smoke model trained on real Br35H scans by the
real CLI, exported and archived by ``lightning_app.export``, served by TorchServe 0.12
and by LitServe (``server`` runs each contract test against both; tests/serve/conftest.py).
The TorchServe-only checks (its own request counter, its config) use ``served_model``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch

from tests.conftest import REPO
from tests.serve.serve_images import BAD_INPUTS, ODD_BUT_VALID

pytestmark = pytest.mark.slow
OCTET = {"Content-Type": "application/octet-stream"}


def post(
    client: httpx.Client, url: str, content: bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    return client.post(url, content=content, headers=OCTET if headers is None else headers)


def probabilities(answer: dict) -> dict[str, float]:
    return {p["label"]: p["probability"] for p in answer["probabilities"]}


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def lightning_predictions(
    trained_checkpoint: Path, small_br35h: Path, tmp_path_factory
) -> tuple[list[Path], dict]:
    """The Lightning model's own probabilities on the held-out split (DataModule + Trainer.predict)."""
    import lightning as L

    from lightning_app.data.datamodule import ImageFolderDataModule
    from lightning_app.models.classifier import Classifier

    model = Classifier.load_from_checkpoint(trained_checkpoint, map_location="cpu")
    pre = model.hparams["preprocessing"]
    dm = ImageFolderDataModule(
        data_dir=str(small_br35h),
        image_size=pre["image_size"],
        mean=pre["mean"],
        std=pre["std"],
        cache_dir=str(tmp_path_factory.mktemp("pixels")),
    )
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    probs = torch.cat(trainer.predict(model, datamodule=dm))  # type: ignore[arg-type]
    return dm.test_paths(), {"probs": probs, "class_names": list(model.class_names)}


def served_tolerance(mar: Path) -> float:
    """How far served probabilities may be from Lightning's: fp32 exactly, others within their gate."""
    with zipfile.ZipFile(mar) as archive:
        backend = json.loads(archive.read("model_meta.json"))["backend"]
    if backend["precision"] == "fp32":
        return 1e-4
    return float(backend["parity"]["max_abs_prob_diff"]) + 1e-4


def test_predictions_match_lightning_on_held_out_images(server, mar_file, client, lightning_predictions):
    """The default .mar serves int8: the same answers, probabilities within what its parity gate measured."""
    paths, expected = lightning_predictions
    assert len(paths) >= 10
    tolerance = served_tolerance(mar_file)
    # Concurrent requests so TorchServe batches them: batching must not change any answer.
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda p: post(client, server.predict_url, p.read_bytes()), paths))
    for path, response, probs in zip(paths, responses, expected["probs"], strict=True):
        assert response.status_code == 200, (path, response.text)
        body = response.json()
        served = {p["label"]: p["probability"] for p in body["probabilities"]}
        assert set(served) == set(expected["class_names"])
        for name, p in zip(expected["class_names"], probs.tolist(), strict=True):
            assert served[name] == pytest.approx(p, abs=tolerance), path
        assert body["prediction"] == expected["class_names"][int(probs.argmax())], path
        ranked = [p["probability"] for p in body["probabilities"]]
        assert ranked == sorted(ranked, reverse=True)
        assert sum(ranked) == pytest.approx(1.0, abs=1e-9)
        assert body["prediction"] == body["probabilities"][0]["label"]
        assert body["model"] == "brain_mri"
        assert re.fullmatch(r"[0-9a-f]{12}", body["version"])


def test_multipart_field_data_is_served_like_the_raw_body(server, client, lightning_predictions):
    path = lightning_predictions[0][0]
    raw = post(client, server.predict_url, path.read_bytes()).json()
    multipart = client.post(server.predict_url, files={"data": ("scan.jpg", path.read_bytes(), "image/jpeg")})
    assert multipart.status_code == 200
    assert probabilities(multipart.json()) == pytest.approx(probabilities(raw), abs=1e-5)


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gets_a_4xx_json_naming_the_problem(server, client, case):
    content, expected_code, words = BAD_INPUTS[case]()
    response = post(client, server.predict_url, content)
    assert response.status_code == expected_code, response.text
    body = response.json()
    assert body["code"] == expected_code
    assert all(word in body["message"].lower() for word in words), body


def test_multipart_without_the_data_field_is_refused(server, client, lightning_predictions):
    image = lightning_predictions[0][0].read_bytes()
    response = client.post(server.predict_url, files={"file": ("scan.jpg", image, "image/jpeg")})
    assert response.status_code == 400
    assert "'data'" in response.json()["message"]


def test_json_and_url_encoded_bodies_are_refused_with_advice(server, client):
    as_json = client.post(server.predict_url, json={"image": "x"})
    assert as_json.status_code == 415
    assert "image bytes" in as_json.json()["message"]
    as_form = client.post(server.predict_url, data={"image": "x"})
    assert as_form.status_code == 415
    assert "application/octet-stream" in as_form.json()["message"]


@pytest.mark.parametrize("case", sorted(ODD_BUT_VALID))
def test_odd_but_sane_images_are_served(server, client, case):
    response = post(client, server.predict_url, ODD_BUT_VALID[case]())
    assert response.status_code == 200, response.text
    assert len(response.json()["probabilities"]) == 2


def test_a_colour_image_is_flagged_as_unlike_the_scans_and_still_answered(server, client, mar_file):
    """Brain MRIs carry no colour: the same real scan in false colour, and a real colour photo,
    are answered with their probabilities, ``in_distribution.ok`` false and the colour warning;
    the scan as Br35H stores it (an RGB JPEG) carries its low chroma and no colour warning."""
    from benchmarks.ood_sets import read as package_file
    from lightning_app.export.build import mar_meta
    from lightning_app.inference.colour import LIMIT
    from tests.serve.serve_images import real_jpeg, tinted

    assert mar_meta(mar_file)["ood"]["colour"] == {"limit": LIMIT, "val_flagged": 0.0, "test_flagged": 0.0}
    grey = post(client, server.predict_url, real_jpeg()).json()
    assert grey["in_distribution"]["colour"] < LIMIT / 2 and "colour" not in grey.get("warning", "")
    for image in (tinted("JPEG"), package_file("matplotlib", "mpl-data/sample_data/grace_hopper.jpg")):
        answer = post(client, server.predict_url, image).json()
        assert len(answer["probabilities"]) == 2
        assert answer["in_distribution"]["ok"] is False and answer["in_distribution"]["colour"] > LIMIT
        assert "in colour" in answer["warning"]


def test_a_bad_image_in_a_batch_fails_only_its_own_request(server, client, lightning_predictions):
    good = lightning_predictions[0][0].read_bytes()
    bodies = [good, b"not an image", good, b"", good, b"\xff\xd8\xff" + good[3:200], good, good]
    for _ in range(3):  # concurrent: they share backend batches (batchSize 8, maxBatchDelay 10 ms)
        with ThreadPoolExecutor(len(bodies)) as pool:
            responses = list(pool.map(lambda b: post(client, server.predict_url, b), bodies))
        codes = [r.status_code for r in responses]
        assert codes == [200, 400, 200, 400, 200, 400, 200, 200]
        first = probabilities(responses[0].json())
        for response in (r for r, c in zip(responses, codes, strict=True) if c == 200):
            # the good image gets the same answer in every slot, whatever the batch holds
            assert probabilities(response.json()) == pytest.approx(first, abs=1e-5)


def test_server_is_healthy_after_all_bad_inputs(server, client, lightning_predictions):
    for case in sorted(BAD_INPUTS):
        post(client, server.predict_url, BAD_INPUTS[case]()[0])
    ping = client.get(f"{server.inference_url}/ping")
    assert ping.status_code == 200
    assert ping.json()["status"] == "Healthy"
    response = post(client, server.predict_url, lightning_predictions[0][0].read_bytes())
    assert response.status_code == 200
    assert len(response.json()["probabilities"]) == 2


def test_nothing_is_written_under_a_client_supplied_name(server, client, lightning_predictions):
    name = "evil-upload-name-7f3a.jpg"
    image = lightning_predictions[0][0].read_bytes()
    assert client.post(server.predict_url, files={"data": (name, image, "image/jpeg")}).status_code == 200
    written = [
        p for root in (server.workdir, Path(os.environ.get("TMPDIR", "/tmp"))) for p in root.rglob(name)
    ]
    assert written == []


def test_metrics_count_inference_requests(served_model, client, lightning_predictions):
    def count() -> float:
        text = client.get(f"{served_model.metrics_url}/metrics").text
        found = re.findall(
            r'^ts_inference_requests_total\{[^}]*model_name="brain_mri"[^}]*\} ([0-9.e+]+)$', text, re.M
        )
        return sum(float(v) for v in found)

    before = count()
    for _ in range(3):
        post(client, served_model.predict_url, lightning_predictions[0][0].read_bytes())
    assert count() >= before + 3


def test_management_and_metrics_bind_loopback_only(served_model):
    for url in (served_model.inference_url, served_model.management_url, served_model.metrics_url):
        assert url.startswith("http://127.0.0.1:")
    config = (served_model.workdir / "config.properties").read_text()
    assert re.search(r"^management_address=http://127\.0\.0\.1:\d+$", config, re.M)
    assert re.search(r"^metrics_address=http://127\.0\.0\.1:\d+$", config, re.M)
    assert "disable_token_authorization=true" in config


def test_loadtest_drives_the_server_without_failures(server, tmp_path):
    """``make loadtest``'s locustfile, headless for a few seconds against the real server."""
    locust = Path(sys.executable).with_name("locust")
    cmd = [
        str(locust), "-f", str(REPO / "serve" / "locustfile.py"), "--headless", "-u", "2", "-r", "2",
        "-t", "4s", "--host", server.inference_url, "--csv", str(tmp_path / "lt"), "--only-summary",
    ]  # fmt: skip
    subprocess.run(cmd, cwd=tmp_path, check=False, timeout=120, capture_output=True)
    with (tmp_path / "lt_stats.csv").open() as f:
        total = next(row for row in csv.DictReader(f) if row["Name"] == "Aggregated")
    assert int(total["Request Count"]) > 0
    assert int(total["Failure Count"]) == 0
