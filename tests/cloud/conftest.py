"""Fixtures of the cloud tests: stand-ins for the GCP APIs that cannot exist here.

The registry's GCS emulator (``gcs_bucket``) is in ``tests/conftest.py``: the drift job and
the UI read the registry too."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


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
