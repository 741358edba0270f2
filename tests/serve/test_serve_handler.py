"""The TorchServe handler without Java: a stand-in context replaces TorchServe's.

The ``Context`` is mocked because these tests run the handler in-process for fast
feedback; the same behaviours are checked against a real TorchServe in
``test_serve_torchserve.py``. The model directory holds what export writes (random
small-CNN weights), and the images are real Br35H scans.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import lightning_app.inference.colour as colour_module
import lightning_app.inference.engine as engine_module
import serve.handler as handler_module
from lightning_app.export import build as export
from lightning_app.models.backbones import build_backbone
from lightning_app.transforms import EvalPreset, load
from serve.handler import BrainMRIHandler, RequestError
from tests.serve.serve_images import BAD_INPUTS, ODD_BUT_VALID, real_jpeg

CLASSES_4 = ["glioma", "meningioma", "no_tumor", "pituitary"]


class FakeContext:
    """What the handler uses of ``ts.context.Context``: properties, per-request status and headers."""

    def __init__(self, model_dir: Path, headers: list[dict[str, str]] | None = None) -> None:
        self.system_properties = {"model_dir": str(model_dir)}
        self.manifest = {"model": {"modelName": "brain_mri"}}
        self.headers = headers or []
        self.status: dict[int, tuple[int, str]] = {}
        self.content_types: dict[int, str] = {}

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.status[idx] = (code, phrase)

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.content_types[idx] = value

    def get_request_header(self, idx: int, key: str) -> str | None:
        return self.headers[idx].get(key) if idx < len(self.headers) else None

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return dict(self.headers[idx]) if idx < len(self.headers) else {}


def model_dir(tmp_path: Path, class_names: list[str], image_size: int = 64) -> Path:
    """The files export writes, for a random small CNN."""
    torch.manual_seed(0)
    net = build_backbone("small_cnn", num_classes=len(class_names))
    torch.save(net.state_dict(), tmp_path / export.WEIGHTS)
    (tmp_path / export.INDEX_TO_NAME).write_text(json.dumps({str(i): n for i, n in enumerate(class_names)}))
    meta = {
        "version": "0123456789ab",
        "backbone": "small_cnn",
        "num_classes": len(class_names),
        "in_channels": 1,
        "class_names": class_names,
        "preprocessing": {"image_size": image_size, "mean": 0.5, "std": 0.25},
    }
    (tmp_path / export.META).write_text(json.dumps(meta))
    return tmp_path


@pytest.fixture
def loaded(tmp_path: Path) -> tuple[BrainMRIHandler, FakeContext]:
    context = FakeContext(model_dir(tmp_path, ["no_tumor", "tumor"]))
    service = BrainMRIHandler()
    service.initialize(context)
    return service, context


def test_answer_lists_every_class_sorted_and_matches_the_plain_network(tmp_path: Path, loaded) -> None:
    service, context = loaded
    (body,) = service.handle([{"body": bytearray(real_jpeg())}], context)
    answer = json.loads(body)
    assert context.status == {}
    assert context.content_types[0] == "application/json"
    probs = [p["probability"] for p in answer["probabilities"]]
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) == pytest.approx(1.0, abs=1e-12)
    assert answer["prediction"] == answer["probabilities"][0]["label"]
    assert answer["version"] == "0123456789ab"
    assert answer["model"] == "brain_mri"
    # Same weights, same shared preprocessing, computed independently of the handler:
    net = build_backbone("small_cnn", num_classes=2)
    net.load_state_dict(torch.load(tmp_path / export.WEIGHTS, weights_only=True))
    with torch.inference_mode():
        x = torch.from_numpy(EvalPreset(mean=0.5, std=0.25)(load(real_jpeg(), image_size=64))).unsqueeze(0)
        expected = net.eval()(x).softmax(dim=1)[0].tolist()
    served = {p["label"]: p["probability"] for p in answer["probabilities"]}
    assert [served["no_tumor"], served["tumor"]] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_the_operating_point_decides_and_says_what_it_targets(tmp_path: Path, threshold: float) -> None:
    directory = model_dir(tmp_path, ["no_tumor", "tumor"])
    meta = json.loads((directory / export.META).read_text())
    point = {"negative_class": "no_tumor", "threshold": threshold, "target_sensitivity": 0.97}
    meta["operating_point"] = point | {
        "chosen_on": "validation",
        "sensitivity": 0.98,
        "specificity": 0.9,
        "positives": 60,
        "negatives": 30,
    }
    (directory / export.META).write_text(json.dumps(meta))
    context = FakeContext(directory)
    service = BrainMRIHandler()
    service.initialize(context)
    (body,) = service.handle([{"body": bytearray(real_jpeg())}], context)
    decision = json.loads(body)["decision"]
    p_tumour = {p["label"]: p["probability"] for p in json.loads(body)["probabilities"]}["tumor"]
    assert decision["score"] == pytest.approx(p_tumour)
    # threshold 0 screens every scan positive; threshold 1 only a certain tumour
    assert decision["label"] == ("tumor" if threshold == 0.0 else "no_tumor")
    assert decision["threshold"] == threshold
    assert "97%" in decision["target"] and "validation" in decision["target"]


def test_exports_without_an_operating_point_answer_without_a_decision(loaded) -> None:
    service, context = loaded
    (body,) = service.handle([{"body": bytearray(real_jpeg())}], context)
    assert "decision" not in json.loads(body)


def test_four_classes_from_index_to_name(tmp_path: Path) -> None:
    context = FakeContext(model_dir(tmp_path, CLASSES_4))
    service = BrainMRIHandler()
    service.initialize(context)
    (body,) = service.handle([{"data": real_jpeg()}], context)
    assert sorted(p["label"] for p in json.loads(body)["probabilities"]) == CLASSES_4


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_fails_only_its_own_slot_in_a_batch(loaded, case: str) -> None:
    service, context = loaded
    content, code, words = BAD_INPUTS[case]()
    bodies = service.handle([{"body": real_jpeg()}, {"body": content}, {"body": real_jpeg()}], context)
    assert context.status == {1: (code, RequestError.PHRASES[code])}
    error = json.loads(bodies[1])
    assert error["code"] == code
    assert all(w in error["message"].lower() for w in words)
    assert json.loads(bodies[0]) == json.loads(bodies[2])


@pytest.mark.parametrize("case", sorted(ODD_BUT_VALID))
def test_odd_formats_that_decode_sanely_are_served(loaded, case: str) -> None:
    service, context = loaded
    (body,) = service.handle([{"body": ODD_BUT_VALID[case]()}], context)
    assert context.status == {}
    assert len(json.loads(body)["probabilities"]) == 2


@pytest.mark.parametrize(
    ("row", "code", "word"),
    [
        ({"file": b"x"}, 400, "'data' field"),
        ({"body": {"image": "x"}}, 415, "image bytes"),
        ({"body": "plain text"}, 400, "not an image"),
        ({}, 400, "empty"),
        ("not a dict", 400, "malformed"),
    ],
)
def test_request_shapes(loaded, row: Any, code: int, word: str) -> None:
    service, _ = loaded
    with pytest.raises(RequestError) as info:
        service.decode(row)
    assert info.value.code == code
    assert word in info.value.message


@pytest.mark.parametrize("row", [{"garbage": b"\xff"}, {}], ids=["parsed", "parsed-to-nothing"])
def test_url_encoded_form_gets_advice(loaded, row: dict[str, bytes]) -> None:
    service, _ = loaded
    context = FakeContext(Path(), headers=[{"Content-Type": "application/x-www-form-urlencoded"}])
    (body,) = service.handle([row], context)
    assert context.status[0][0] == 415
    assert "application/octet-stream" in json.loads(body)["message"]


def test_size_limit_is_configurable(loaded, monkeypatch: pytest.MonkeyPatch) -> None:
    service, context = loaded
    monkeypatch.setenv("SERVE_MAX_IMAGE_BYTES", "1000")
    service.initialize(context)  # the settings are read when the handler initialises
    (body,) = service.handle([{"body": real_jpeg()}], context)
    assert context.status[0][0] == 413
    assert "1,000 byte limit" in json.loads(body)["message"]


def test_unexpected_decoder_failure_stays_a_400(loaded, monkeypatch: pytest.MonkeyPatch) -> None:
    service, context = loaded

    def broken(*args: Any, **kwargs: Any) -> torch.Tensor:
        raise MemoryError("boom")

    monkeypatch.setattr(engine_module, "load", broken)  # this export has no colour check: the plain decode
    monkeypatch.setattr(colour_module, "read", broken)  # (an export with the check decodes through this)
    (body,) = service.handle([{"body": real_jpeg()}], context)
    assert context.status[0][0] == 400
    assert "MemoryError" in json.loads(body)["message"]


def test_module_entry_point_initialises_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handler_module, "_service", BrainMRIHandler())
    monkeypatch.setenv("SERVE_TORCH_THREADS", str(torch.get_num_threads()))
    context = FakeContext(model_dir(tmp_path, ["no_tumor", "tumor"]))
    assert handler_module.handle(None, context) is None  # TorchServe's load call
    assert handler_module._service.initialized
    (body,) = handler_module.handle([{"body": real_jpeg()}], context) or []
    assert json.loads(body)["model"] == "brain_mri"


def test_the_handler_never_imports_lightning_or_the_data_code() -> None:
    """The serving image carries no Lightning: importing the handler must not need it."""
    import subprocess
    import sys

    code = (
        "import sys, serve.handler\n"
        "top = ('lightning', 'pytorch_lightning', 'torchmetrics')\n"
        "ours = ('lightning_app.data', 'lightning_app.models.classifier')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in top or m.startswith(ours)]\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
