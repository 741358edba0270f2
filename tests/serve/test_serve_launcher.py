"""``python -m serve`` (``make serve``) and the launcher's guards, with real TorchServe processes."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from lightning_app.export.build import archive, export
from serve.cli import main
from serve.launcher import LaunchError, render_config, start_torchserve
from tests.conftest import REPO, free_port
from tests.serve.serve_models import CLASSES_4, untrained_checkpoint


def test_render_config_replaces_and_adds_keys_and_keeps_comments(tmp_path: Path) -> None:
    template = tmp_path / "in.properties"
    template.write_text("# inference_address=comment\ninference_address=http://127.0.0.1:8080\nother=1\n")
    out = render_config(
        {"inference_address": "http://0.0.0.0:9", "grpc_inference_port": "5"}, tmp_path / "real"
    )
    text = render_config(
        {"inference_address": "http://0.0.0.0:9", "new": "5"}, tmp_path / "o", template
    ).read_text()
    assert text == "# inference_address=comment\ninference_address=http://0.0.0.0:9\nother=1\nnew=5\n"
    assert "grpc_inference_port=5" in out.read_text()  # the real template


def test_missing_archive_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main({"SERVE_MAR": str(tmp_path / "nope.mar")}) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "model archive not found" in err
    assert "make mar" in err


@pytest.mark.parametrize("runtime", ["torchserve", "litserve"])
@pytest.mark.parametrize("damage", ["truncated", "not a zip", "no manifest"])
def test_a_corrupt_archive_is_one_line_and_exit_2_before_anything_starts(
    four_class_mar: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], runtime: str, damage: str
) -> None:
    mar, data = tmp_path / "brain_mri.mar", four_class_mar.read_bytes()
    if damage == "truncated":
        mar.write_bytes(data[: len(data) // 2])
    elif damage == "not a zip":
        mar.write_bytes(b"<html>404 Not Found</html>")
    else:
        with zipfile.ZipFile(mar, "w") as archive:
            archive.writestr("model-config.yaml", "minWorkers: 1\n")
    started = time.monotonic()
    assert main({"SERVE_MAR": str(mar), "SERVE_RUNTIME": runtime, "PORT": str(free_port())}) == 2
    assert time.monotonic() - started < 5, "refused before a server starts"
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "is not a model archive" in err and "make mar" in err


def test_port_taken_is_one_line_and_exit_2(
    four_class_mar: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mar = four_class_mar
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main({"SERVE_MAR": str(mar), "PORT": str(port)}) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"port {port} on 127.0.0.1 is already in use" in err


def test_bad_port_value_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mar = tmp_path / "brain_mri.mar"
    mar.write_bytes(b"x")
    assert main({"SERVE_MAR": str(mar), "PORT": "eighty"}) == 2
    assert "PORT='eighty': expected a whole number from 1 to 65535" in capsys.readouterr().err


def test_make_serve_entrypoint_reports_a_missing_archive(tmp_path: Path) -> None:
    env = {**os.environ, "SERVE_MAR": str(tmp_path / "missing.mar")}
    result = subprocess.run(
        [sys.executable, "-m", "serve"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: model archive not found")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_python_m_serve_serves_a_4_class_model_in_the_foreground_and_stops(
    four_class_mar, tmp_path: Path
) -> None:
    """``python -m serve`` as ``make serve`` runs it: ready line, 4 named classes, SIGTERM stops all."""
    port = free_port()
    env = {
        **os.environ,
        "SERVE_MAR": str(four_class_mar),
        "PORT": str(port),
        "SERVE_MANAGEMENT_PORT": str(free_port()),
        "SERVE_METRICS_PORT": str(free_port()),
        "SERVE_WORKDIR": str(tmp_path),
    }
    log = (tmp_path / "out.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "serve"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 180
        while "serving brain_mri at" not in Path(log.name).read_text():
            assert proc.poll() is None, Path(log.name).read_text()[-3000:]
            assert time.monotonic() < deadline, "not ready in 180 s"
            time.sleep(0.5)
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 80), dtype=np.uint8)).save(buf, "PNG")
        response = httpx.post(
            f"http://127.0.0.1:{port}/predictions/brain_mri",
            content=buf.getvalue(),
            headers={"Content-Type": "image/png"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        probs = response.json()["probabilities"]
        assert sorted(p["label"] for p in probs) == CLASSES_4
        assert sum(p["probability"] for p in probs) == pytest.approx(1.0)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children  # torchserve -> java -> python worker
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        log.close()
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not list(Path(REPO).glob("logs"))  # TorchServe wrote its logs into the workdir


@pytest.mark.slow
def test_a_handler_that_cannot_import_fails_the_start_within_the_timeout(tmp_path: Path) -> None:
    """TorchServe itself hangs (worker restarts forever); the launcher's timeout turns that into an error."""
    broken = tmp_path / "handler.py"
    broken.write_text("import module_that_does_not_exist_anywhere\n")
    exported = export(untrained_checkpoint(tmp_path / "m.ckpt", ["a", "b"]), tmp_path / "export")
    mar = archive(exported, tmp_path / "store", handler=broken)
    started = time.monotonic()
    with pytest.raises(LaunchError, match="did not serve brain_mri within 25 s"):
        start_torchserve(
            mar, tmp_path / "work", inference_port=free_port(), management_port=free_port(),
            metrics_port=free_port(), timeout=25,
        )  # fmt: skip
    assert time.monotonic() - started < 90
    leftovers = [
        p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []
