"""``python -m lightning_app.ui.demo`` (``make demo``'s last step): both services up, Ctrl-C stops both."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import TextIO

import pytest

from lightning_app.ui.app import example_scans
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


def demo_command(mar: Path, ports: dict[str, int]) -> list[str]:
    flags = [f"--{name}={port}" for name, port in ports.items()]
    return [sys.executable, "-m", "lightning_app.ui.demo", "--mar", str(mar), "--timeout", "180", *flags]


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line or environment contains ``text`` (Linux /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            blob = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if text.encode() in blob:
            found.append(int(proc.name))
    return found


def refuses(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_missing_archive_is_one_line_and_exit_2(tmp_path: Path) -> None:
    ports = {"ui-port": free_port()}
    result = subprocess.run(
        demo_command(tmp_path / "none.mar", ports), cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: model archive not found")
    assert "Traceback" not in result.stderr


def test_a_taken_page_port_is_refused_before_starting_anything(capsys: pytest.CaptureFixture[str]) -> None:
    from lightning_app.ui.demo import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--mar", "model_store/none.mar", "--ui-port", str(port)]) == 2
    assert f"error: port {port} is already in use" in capsys.readouterr().err


class Announcements(io.TextIOBase):
    """Stands in for ``sys.stdout``: forwards every write and notes when ``marker`` is printed."""

    def __init__(self, stream: TextIO, marker: str) -> None:
        self.stream, self.marker = stream, marker
        self.text: list[str] = []
        self.seen = threading.Event()

    def write(self, text: str) -> int:
        self.text.append(text)
        if self.marker in "".join(self.text):
            self.seen.set()
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def get(url: str, data: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


@pytest.mark.slow
def test_demo_serves_both_and_ctrl_c_stops_both_without_orphans(
    mar_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs the supervisor in this process (for coverage); a watcher thread plays the user.

    The watcher waits for both services and for the printed URLs (a user presses Ctrl-C after
    reading them; the page can answer before the supervisor has seen it), checks them, then
    sends this process SIGINT — what Ctrl-C sends. It sends SIGINT after its own deadline too,
    so nothing can hang.
    """
    from lightning_app.ui.demo import main

    ports = {name: free_port() for name in ("inference-port", "management-port", "metrics-port", "ui-port")}
    page = f"http://127.0.0.1:{ports['ui-port']}"
    predict = f"http://127.0.0.1:{ports['inference-port']}/predictions/brain_mri"
    seen: dict[str, object] = {}
    finished = threading.Event()
    stdout = Announcements(sys.stdout, "Ctrl-C stops both.")
    monkeypatch.setattr(sys, "stdout", stdout)

    def user() -> None:
        deadline = time.monotonic() + 300
        while not finished.is_set() and time.monotonic() < deadline:
            try:
                seen["page"] = get(page)
                seen["prediction"] = get(predict, example_scans()[0].read_bytes())
                seen["processes"] = processes_mentioning("brain-mri-demo-")
                stdout.seen.wait(timeout=max(0.0, deadline - time.monotonic()))
                break
            except OSError:
                time.sleep(0.5)
        if not finished.is_set():
            os.kill(os.getpid(), signal.SIGINT)

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    watcher = threading.Thread(target=user, daemon=True)
    watcher.start()
    try:
        code = main([*(f"--{name}={port}" for name, port in ports.items()), "--mar", str(mar_file)])
    finally:
        finished.set()
        watcher.join(timeout=30)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    output = capsys.readouterr().out
    assert code == 0, output
    assert seen.get("page") == 200
    assert seen.get("prediction") == 200
    assert f"Demo page:  {page}" in output
    assert predict in output
    workdir = re.search(r"work dir (\S+),", output)
    assert workdir, output
    assert seen.get("processes"), "TorchServe and the page were running"
    assert all(refuses(port) for port in ports.values()), "every port is closed after Ctrl-C"
    assert processes_mentioning(workdir.group(1)) == [], "no TorchServe JVM, worker or page left behind"
    assert not Path(workdir.group(1)).exists()
