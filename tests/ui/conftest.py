"""UI test helpers: a tiny real HTTP server with scripted answers (real sockets on 127.0.0.1)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lightning_app.ui.settings import Settings
from tests.conftest import free_port


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    delay_s: float = 0.0

    @classmethod
    def json(cls, status: int, obj: Any, delay_s: float = 0.0) -> Reply:
        return cls(status, json.dumps(obj).encode(), "application/json", delay_s)


@dataclass
class Scripted:
    """Answers each path with its :class:`Reply` (404 otherwise) and records the requests."""

    replies: dict[str, Reply] = field(default_factory=dict)
    received: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def scripted_server() -> Iterator[Scripted]:
    script = Scripted()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            script.received.append((self.command, self.path, dict(self.headers), body))
            reply = script.replies.get(self.path, Reply.json(404, {"code": 404, "message": "no such path"}))
            time.sleep(reply.delay_s)
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout): that is what some tests check

        do_GET = do_POST = _answer  # noqa: N815 (http.server names)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    script.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield script
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- a real browser and the real page -----------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's chromium driven by Playwright (``playwright install`` cannot download here)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield chromium
        finally:
            chromium.close()


@contextmanager
def running_page(settings: Settings) -> Iterator[str]:
    """The real Gradio page for ``settings`` on a free 127.0.0.1 port (in a thread); yields its URL."""
    from lightning_app.ui.app import build_app, launch_options

    options = launch_options(replace(settings, host="127.0.0.1", port=free_port()))
    page = build_app(settings)
    page.queue()
    page.launch(prevent_thread_lock=True, **options)
    try:
        yield f"http://127.0.0.1:{options['server_port']}"
    finally:
        page.close()


@pytest.fixture
def tab(browser: Any) -> Iterator[Any]:
    """A fresh browser tab; every wait in it times out (Playwright's own default is 30 s)."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(30_000)
    try:
        yield context.new_page()
    finally:
        context.close()
