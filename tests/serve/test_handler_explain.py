"""The handler's explanations and OOD block in-process, with the stand-in TorchServe context.

The context is a stand-in (as in ``test_serve_handler.py``) for fast feedback; the same
behaviours run against a real TorchServe in ``test_torchserve_explain.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lightning_app.inference.explain import decode_png
from serve.handler import BrainMRIHandler
from tests.inference.model_dirs import write_model_dir
from tests.serve.serve_images import real_jpeg
from tests.serve.test_serve_handler import FakeContext

EXPLAIN = {"explain": "True"}


def loaded(
    tmp_path: Path, headers: list[dict[str, str]], backbone: str = "small_cnn"
) -> tuple[BrainMRIHandler, FakeContext]:
    context = FakeContext(write_model_dir(tmp_path / backbone, backbone), headers)
    service = BrainMRIHandler()
    service.initialize(context)
    return service, context


@pytest.mark.parametrize("backbone", ["small_cnn", "mobilenet_v3_small"])
def test_a_mixed_batch_answers_each_request_as_its_own_kind(tmp_path: Path, backbone: str) -> None:
    headers = [EXPLAIN, {}, EXPLAIN, EXPLAIN, {}, EXPLAIN, {**EXPLAIN, "x-target": "1"}]
    service, context = loaded(tmp_path, headers, backbone)
    image = bytearray(real_jpeg())
    rows = [
        {"body": image},
        {"body": image},
        {"body": b"not an image"},
        {"body": image, "target": b"no_tumor"},
        {"body": b""},
        {"data": image, "target": "glioma"},
        {"body": image},
    ]
    bodies = [json.loads(b) for b in service.handle(rows, context)]
    assert sorted(context.status) == [2, 4, 5]
    assert {i: code for i, (code, _) in context.status.items()} == {2: 400, 4: 400, 5: 400}
    assert "glioma" in bodies[5]["message"] and "no_tumor, tumor" in bodies[5]["message"]
    assert "explanation" not in bodies[1]
    for i in (0, 3):
        heatmap = decode_png(bodies[i]["explanation"]["heatmap"])
        assert heatmap.shape == (64, 64) and heatmap.max() == 255
        assert bodies[i]["explanation"]["shape"] == [64, 64]
    assert bodies[0]["explanation"]["target"] == bodies[0]["prediction"]
    assert bodies[3]["explanation"]["target"] == "no_tumor"
    assert bodies[6]["explanation"]["target"] == "tumor", "X-Target header, any case"
    # the explanation's prediction block is the /predictions answer for the same image
    probs = {p["label"]: p["probability"] for p in bodies[0]["probabilities"]}
    plain = {p["label"]: p["probability"] for p in bodies[1]["probabilities"]}
    assert probs == pytest.approx(plain, abs=1e-6)
    assert bodies[0]["explanation"]["method"] == ("cam" if backbone == "small_cnn" else "grad-cam")


def test_explanations_of_one_image_are_identical_across_batches(tmp_path: Path) -> None:
    service, context = loaded(tmp_path, [EXPLAIN] * 3)
    image = bytearray(real_jpeg())
    alone = json.loads(service.handle([{"body": image}], context)[0])
    batched = [json.loads(b) for b in service.handle([{"body": image}] * 3, context)]
    first = decode_png(alone["explanation"]["heatmap"]).astype(int)
    for body in batched:
        assert np.abs(decode_png(body["explanation"]["heatmap"]).astype(int) - first).max() <= 1


def test_without_ood_statistics_answers_carry_no_ood_block(tmp_path: Path) -> None:
    service, context = loaded(tmp_path, [{}])
    body = json.loads(service.handle([{"body": bytearray(real_jpeg())}], context)[0])
    assert "in_distribution" not in body and "warning" not in body


def test_unknown_backbone_refuses_explanations_but_serves_predictions(tmp_path: Path) -> None:
    service, context = loaded(tmp_path, [EXPLAIN, {}])
    service.explainer = None  # as initialize() leaves it for a backbone without a CAM layer
    bodies = [json.loads(b) for b in service.handle([{"body": bytearray(real_jpeg())}] * 2, context)]
    assert context.status[0][0] == 400 and "not available" in bodies[0]["message"]
    assert 1 not in context.status and len(bodies[1]["probabilities"]) == 2
