"""Serving an ONNX export needs numpy, Pillow and ONNX Runtime only: no torch.

A real ``.mar`` exported with its training data (int8 graph, OOD statistics, PCA basis) is
served by processes in which ``import torch`` fails (a ``sys.meta_path`` blocker installed by
a ``sitecustomize`` on ``PYTHONPATH``, so LitServe's worker processes have it too): the
serving core in a subprocess, then the real LitServe app. Their answers, explanations and
prediction-log lines must be the numbers of the same core with torch at hand; torch must
never be loaded. A model exported without an ONNX graph needs the eager backend: without
torch it fails in one line that says so. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from lightning_app.inference.service import Incoming, ModelService
from lightning_app.inference.settings import ServeSettings
from tests.conftest import REPO, free_port
from tests.inference.model_dirs import write_model_dir
from tests.serve.serve_images import real_jpeg
from tests.serve.serve_models import untrained_checkpoint

BLOCKER = '''
import sys

class _NoTorch:
    """Refuse torch and torchvision: this interpreter must serve without them."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "lightning"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the torch-free test)", name=name)
        return None

sys.meta_path.insert(0, _NoTorch())
'''

SERVE = """
import json, sys
from pathlib import Path
from lightning_app.inference.engine import InferenceEngine, TorchMissingError
from lightning_app.inference.service import Incoming, ModelService
from lightning_app.inference.settings import ServeSettings

model_dir, image, eager_dir = Path(sys.argv[1]), Path(sys.argv[2]).read_bytes(), Path(sys.argv[3])
service = ModelService()
service.load(model_dir, ServeSettings())
replies = service.serve([Incoming({"body": image}), Incoming({"body": image}, explain=True)])
try:
    InferenceEngine(eager_dir)
    eager = "loaded"
except TorchMissingError as exc:
    eager = str(exc)
fine = ModelService()  # a heatmap method that needs a backward pass: explanations off, predictions on
fine.load(model_dir, ServeSettings.from_env({"SERVE_HEATMAP": "layer-cam"}))
fine_status = fine.serve([Incoming({"body": image})])[0].status
occlusion = ModelService()  # forward passes only: explains without torch
occlusion.load(model_dir, ServeSettings.from_env({"SERVE_HEATMAP": "occlusion"}))
occluded = occlusion.serve([Incoming({"body": image}, explain=True)])[0]
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "lightning"))
print(json.dumps({"replies": [[r.status, r.body] for r in replies], "eager": eager, "loaded": loaded,
                  "fine": [fine.no_explainer, fine_status], "occlusion": [occluded.status, occluded.body]}))
"""


@pytest.fixture(scope="module")
def int8_mar(small_br35h: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ``.mar`` exported with its data: int8 ONNX graph, OOD statistics, PCA basis."""
    from lightning_app.export.build import build_mar

    root = tmp_path_factory.mktemp("torch_free")
    mar = build_mar(
        untrained_checkpoint(root / "best.ckpt", ["no_tumor", "tumor"]), root / "store", data_dir=small_br35h
    )
    names = zipfile.ZipFile(mar).namelist()
    assert {"model_int8.onnx", "ood_stats.pt", "embedding_pca.pt"} <= set(names), names
    return mar


def no_torch_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a process (and its children) in which torch cannot be imported."""
    blocker = tmp_path / "blocker"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    path = os.pathsep.join(p for p in (str(blocker), str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def with_torch(model_dir: Path, image: bytes) -> list[dict[str, Any]]:
    """The same requests through the same core in this process, where torch is at hand."""
    service = ModelService()
    service.load(model_dir, ServeSettings())
    replies = service.serve([Incoming({"body": image}), Incoming({"body": image}, explain=True)])
    assert [r.status for r in replies] == [200, 200]
    return [json.loads(r.body) for r in replies]


def assert_same(got: dict[str, Any], expected: dict[str, Any]) -> None:
    """Same labels in the same order, probabilities and OOD score to 1e-6, same heatmap."""
    assert got["prediction"] == expected["prediction"]
    assert [p["label"] for p in got["probabilities"]] == [p["label"] for p in expected["probabilities"]]
    for a, b in zip(got["probabilities"], expected["probabilities"], strict=True):
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-6)
    assert got["in_distribution"]["score"] == pytest.approx(expected["in_distribution"]["score"], abs=1e-4)
    if "explanation" in expected:
        assert got["explanation"]["heatmap"] == expected["explanation"]["heatmap"]
        assert got["explanation"]["backend"] == "int8"


def test_the_core_serves_an_int8_export_without_torch(int8_mar: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    zipfile.ZipFile(int8_mar).extractall(model_dir)
    image = tmp_path / "scan.jpg"
    image.write_bytes(real_jpeg())
    eager_dir = write_model_dir(tmp_path / "eager")  # a state_dict, no ONNX graph
    run = subprocess.run(
        [sys.executable, "-c", SERVE, str(model_dir), str(image), str(eager_dir)],
        env=no_torch_env(tmp_path), capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []  # torch was never loaded
    assert [status for status, _ in out["replies"]] == [200, 200]
    for (_, body), expected in zip(out["replies"], with_torch(model_dir, image.read_bytes()), strict=True):
        assert_same(json.loads(body), expected)
    # the prediction-log line was written, with its embedding (the PCA basis read without torch)
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    records = [r for r in lines if r.get("event") == "prediction"]
    assert records and all(len(r["embedding"]) > 0 for r in records), run.stdout[-2000:]
    # an eager-only export says in one line that it needs torch
    assert "needs PyTorch, which is not installed here" in out["eager"] and "\n" not in out["eager"]
    # the torch-free answer names the method that made its map: the served CAM (SERVE_HEATMAP=auto)
    assert json.loads(out["replies"][1][1])["explanation"]["method"] == "cam"
    # asking it for LayerCAM leaves explanations unavailable, saying why; predictions still answer
    why, status = out["fine"]
    assert status == 200 and why.startswith("layer-cam heatmaps") and "needs PyTorch" in why
    # occlusion needs forward passes only: the int8 graph explains with it, torch-free, as with torch
    status, body = out["occlusion"]
    occluded = json.loads(body)["explanation"]
    service = ModelService()
    service.load(model_dir, ServeSettings.from_env({"SERVE_HEATMAP": "occlusion"}))
    reply = service.serve([Incoming({"body": image.read_bytes()}, explain=True)])[0]
    assert status == 200 and (occluded["method"], occluded["backend"]) == ("occlusion", "int8")
    assert occluded["heatmap"] == json.loads(reply.body)["explanation"]["heatmap"]


def test_litserve_serves_without_torch(int8_mar: Path, tmp_path: Path) -> None:
    """The real LitServe app, its workers unable to import torch, answers as the core with torch."""
    from serve.runtimes import start_litserve

    model_dir = tmp_path / "model"
    zipfile.ZipFile(int8_mar).extractall(model_dir)
    expected = with_torch(model_dir, real_jpeg())
    env = {k: v for k, v in no_torch_env(tmp_path).items() if k == "PYTHONPATH"}
    headers = {"Content-Type": "application/octet-stream"}
    server = start_litserve(
        int8_mar, tmp_path / "lit", timeout=180, env=env, inference_port=free_port(), metrics_port=free_port()
    )
    with server, httpx.Client(timeout=60) as client:
        predicted = client.post(server.predict_url, content=real_jpeg(), headers=headers)
        explain_url = server.predict_url.replace("/predictions/", "/explanations/")
        explained = client.post(explain_url, content=real_jpeg(), headers=headers)
    assert predicted.status_code == 200, predicted.text
    assert explained.status_code == 200, explained.text
    assert_same(predicted.json(), expected[0])
    assert_same(explained.json(), expected[1])


def test_an_eager_only_archive_fails_to_start_in_one_line_without_torch(tmp_path: Path) -> None:
    """An export without an ONNX graph needs the eager backend: LitServe says so and exits 2."""
    from lightning_app.export.build import build_mar

    mar = build_mar(untrained_checkpoint(tmp_path / "best.ckpt", ["no_tumor", "tumor"]), tmp_path / "store")
    assert not [n for n in zipfile.ZipFile(mar).namelist() if n.endswith(".onnx")]
    env = {
        **no_torch_env(tmp_path),
        "SERVE_MAR": str(mar),
        "PORT": str(free_port()),
        "SERVE_METRICS_PORT": str(free_port()),
        "SERVE_WORKDIR": str(tmp_path / "work"),
    }
    run = subprocess.run(
        [sys.executable, "-m", "serve.litserve_app"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "error: serving the eager fp32 backend (no ONNX graph in this export) needs PyTorch, which is not "
        "installed here: serve an ONNX export (precision int8 or onnx-fp32), or install torch"
    ]


GRAD_CAM = """
import json, sys
from pathlib import Path
from lightning_app.inference.service import Incoming, ModelService
from lightning_app.inference.settings import ServeSettings

service = ModelService()
service.load(Path(sys.argv[1]), ServeSettings())
image = Path(sys.argv[2]).read_bytes()
replies = service.serve([Incoming({"body": image}), Incoming({"body": image}, explain=True)])
print(json.dumps([[r.status, json.loads(r.body)] for r in replies]))
"""


def test_grad_cam_without_torch_is_a_400_that_says_why(tmp_path: Path) -> None:
    """A MobileNet ONNX export predicts without torch; its Grad-CAM (a backward pass) is a 400 saying why."""
    from lightning_app.inference import artefacts
    from lightning_app.inference.backends import export_onnx
    from lightning_app.inference.eager import load_network

    root = write_model_dir(tmp_path / "mobilenet", "mobilenet_v3_small")
    meta = json.loads((root / artefacts.META).read_text())
    export_onnx(load_network(root, meta), root / artefacts.ONNX_FP32, in_channels=1, image_size=64)
    (root / artefacts.META).write_text(json.dumps({**meta, "backend": {"precision": "onnx-fp32"}}))
    image = tmp_path / "scan.jpg"
    image.write_bytes(real_jpeg())
    run = subprocess.run(
        [sys.executable, "-c", GRAD_CAM, str(root), str(image)],
        env=no_torch_env(tmp_path), capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    (predicted, explained) = json.loads(run.stdout.strip().splitlines()[-1])
    assert predicted[0] == 200 and predicted[1]["prediction"] in ("no_tumor", "tumor")
    assert explained[0] == 400
    assert "grad-cam heatmaps" in explained[1]["message"] and "needs PyTorch" in explained[1]["message"]
