"""``/explanations`` and the OOD block against the session's real TorchServe and LitServe (``server``).

Nothing is mocked: the smoke model trained on real Br35H scans, exported with its OOD
statistics (fitted on its own train split), served by TorchServe 0.12 and LitServe; held-out scans of
its test split; non-MRI images are real files shipped inside PyPI packages
(``benchmarks/ood_sets.py``).
"""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from benchmarks.ood_sets import image_sets
from lightning_app.inference.explain import decode_png

pytestmark = pytest.mark.slow
OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def held_out(small_br35h: Path) -> list[Path]:
    with (small_br35h / "split.csv").open() as f:
        return [small_br35h / row["path"] for row in csv.DictReader(f) if row["split"] == "test"]


def explain_url(server: Any) -> str:
    return f"{server.inference_url}/explanations/{server.model_name}"


def target_headers(target: str | None) -> dict[str, str]:
    return OCTET if target is None else {**OCTET, "X-Target": target}


def heatmap(body: dict[str, Any]) -> np.ndarray:
    return decode_png(body["explanation"]["heatmap"])


def probabilities(body: dict[str, Any]) -> dict[str, float]:
    return {p["label"]: p["probability"] for p in body["probabilities"]}


def test_explanations_of_held_out_scans(server, client, held_out) -> None:
    for path in held_out[:4]:
        data = path.read_bytes()
        first = client.post(explain_url(server), content=data, headers=OCTET)
        assert first.status_code == 200, first.text
        body = first.json()
        size = body["explanation"]["shape"]
        assert size == [64, 64] and heatmap(body).shape == (64, 64)
        assert np.isfinite(body["explanation"]["peak"]) and heatmap(body).max() in (0, 255)
        assert body["explanation"]["target"] == body["prediction"]
        again = client.post(explain_url(server), content=data, headers=OCTET).json()
        assert again["explanation"]["heatmap"] == body["explanation"]["heatmap"], "deterministic"
        predicted = client.post(server.predict_url, content=data, headers=OCTET).json()
        assert probabilities(body) == pytest.approx(probabilities(predicted), abs=1e-5)
        assert body["in_distribution"] == predicted["in_distribution"]
        assert "explanation" not in predicted


def test_target_by_header_or_multipart_field(server, client, held_out) -> None:
    data = held_out[0].read_bytes()
    maps = {}
    for target in ("no_tumor", "tumor", "1"):
        response = client.post(explain_url(server), content=data, headers=target_headers(target))
        assert response.status_code == 200, response.text
        maps[target] = response.json()["explanation"]
    assert maps["no_tumor"]["target"] == "no_tumor" and maps["tumor"]["target"] == "tumor"
    assert maps["1"]["heatmap"] == maps["tumor"]["heatmap"]
    assert maps["no_tumor"]["heatmap"] != maps["tumor"]["heatmap"]
    multipart = client.post(
        explain_url(server),
        files={"data": ("scan.jpg", data, "image/jpeg")},
        data={"target": "no_tumor"},
    )
    assert multipart.status_code == 200, multipart.text
    assert multipart.json()["explanation"]["heatmap"] == maps["no_tumor"]["heatmap"]


@pytest.mark.parametrize(
    ("body", "target", "words"),
    [
        (b"not an image at all", None, ["not an image"]),
        (b"", None, ["empty"]),
        (None, "glioma", ["unknown target", "no_tumor, tumor"]),
        (None, "7", ["unknown target"]),
    ],
)
def test_bad_explanation_requests_get_a_4xx_json(server, client, held_out, body, target, words) -> None:
    content = held_out[0].read_bytes() if body is None else body
    response = client.post(explain_url(server), content=content, headers=target_headers(target))
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert all(word in message for word in words), message


def test_a_mixed_batch_of_predictions_and_explanations(server, client, held_out) -> None:
    good = held_out[1].read_bytes()
    explain = explain_url(server)
    jobs = [
        (server.predict_url, good, None),
        (explain, good, None),
        (explain, b"not an image", None),
        (server.predict_url, good, None),
        (explain, good, "no_tumor"),
        (explain, good, "nope"),
        (server.predict_url, b"", None),
        (explain, good, None),
    ]
    for _ in range(3):  # concurrent, so that TorchServe batches them together (batchSize 8)
        with ThreadPoolExecutor(len(jobs)) as pool:
            responses = list(
                pool.map(
                    lambda job: client.post(job[0], content=job[1], headers=target_headers(job[2])), jobs
                )
            )
        assert [r.status_code for r in responses] == [200, 200, 400, 200, 200, 400, 400, 200]
        bodies = [r.json() for r in responses]
        assert ["explanation" in b for b in bodies] == [False, True, False, False, True, False, False, True]
        assert bodies[4]["explanation"]["target"] == "no_tumor"
        assert bodies[1]["explanation"]["heatmap"] == bodies[7]["explanation"]["heatmap"]
        for b in (bodies[1], bodies[3], bodies[4]):
            assert probabilities(b) == pytest.approx(probabilities(bodies[0]), abs=1e-5)


def verdicts(client: httpx.Client, url: str, images: list[bytes]) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda data: client.post(url, content=data, headers=OCTET), images))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    bodies = [r.json() for r in responses]
    for body in bodies:
        assert set(body["in_distribution"]) == {"ok", "score", "threshold", "colour", "colour_limit"}
        assert ("warning" in body) == (not body["in_distribution"]["ok"])
        assert sum(probabilities(body).values()) == pytest.approx(1.0, abs=1e-9)
    return [body["in_distribution"] for body in bodies]


def test_ood_flags_non_mri_images_and_not_held_out_scans(server, client, held_out) -> None:
    non_mri = verdicts(client, server.predict_url, [d for images in image_sets().values() for _, d in images])
    mri = verdicts(client, server.predict_url, [p.read_bytes() for p in held_out])
    ood_flags = [not v["ok"] for v in non_mri]
    mri_flags = [not v["ok"] for v in mri]
    # The session's model is the 8-epoch smoke model (140 training scans at 64 px, served in
    # int8, threshold from 30 validation scans): far weaker than the default model whose rates
    # docs/benchmarks.md reports. It must still rank non-MRI images above held-out scans and
    # flag some of them while leaving the scans alone.
    pairs = [o["score"] > m["score"] for o in non_mri for m in mri]
    summary = f"non-MRI flagged {sum(ood_flags)}/{len(ood_flags)}, scans {sum(mri_flags)}/{len(mri_flags)}"
    assert np.mean(pairs) >= 0.75, f"AUROC {np.mean(pairs):.2f}; {summary}"
    assert np.mean(ood_flags) >= 0.2, summary
    assert np.mean(mri_flags) <= 0.15, summary
