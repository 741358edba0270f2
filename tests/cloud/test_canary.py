"""The canary decision, for real: probes against real local servers, Cloud Run in a dry run.

Cloud Run cannot exist here, so :class:`~lightning_app.cloud.cloud_run.CloudRun` runs as in
``DRY_RUN=1`` (it prints the gcloud commands and answers with placeholders), but every probe is
real HTTP against a real server standing in for the revision at the tagged URL:

* the session's LitServe on the good ``.mar``: all steps pass, 100 % of the traffic;
* LitServe on a broken archive (the same model with its class labels swapped, a mis-export):
  the golden answers disagree, rolled back before any traffic moved;
* the good server behind a real HTTP proxy that delays each answer: rolled back on p95.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lightning_app.cloud.canary import Limits, Probe, probe
from lightning_app.cloud.cloud_run import CloudRun
from lightning_app.cloud.golden import golden_scans, record_answers
from lightning_app.cloud.rollout import canary, steps_of
from lightning_app.cloud.settings import CloudSettings, CloudSettingsError
from tests.conftest import free_port

pytestmark = pytest.mark.slow
LIMITS = Limits(max_p95_ms=1500, requests=12, concurrency=4)


@pytest.fixture(scope="module")
def golden(mar_file: Path) -> tuple[dict[str, bytes], dict[str, Any]]:
    scans = golden_scans(2)
    return scans, record_answers(mar_file, scans)


def swapped_labels(mar: Path, out: Path) -> Path:
    """``mar`` with ``index_to_name.json`` reversed: it serves, and every answer is wrong."""
    with zipfile.ZipFile(mar) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "index_to_name.json":
                names = json.loads(data)
                keys = sorted(names)
                data = json.dumps(dict(zip(keys, [names[k] for k in reversed(keys)], strict=True))).encode()
            dst.writestr(item, data)
    return out


class _Delay(BaseHTTPRequestHandler):
    upstream = ""
    delay = 0.0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(self.delay)
        request = urllib.request.Request(
            self.upstream + self.path, data=body, headers={"Content-Type": "application/octet-stream"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer, status = response.read(), response.status
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def slow_proxy(lit_served_model: Any) -> Iterator[str]:
    """A real HTTP proxy on 127.0.0.1 adding 2 s to every answer of the good server."""
    handler = type("Delay", (_Delay,), {"upstream": lit_served_model.inference_url, "delay": 2.0})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def run_canary(url: str, golden: tuple[dict[str, bytes], dict[str, Any]]) -> tuple[list[str], CloudRun]:
    scans, expected = golden
    cloud_run = CloudRun(CloudSettings.from_env({"PROJECT": "p"}, dry_run=True), "brain-mri-serve")

    def check(tagged: str) -> Probe:
        assert tagged == "https://candidate---brain-mri-serve.a.run.app"  # the dry run's tagged URL
        return probe(url, scans, expected, LIMITS)

    return canary(cloud_run, "img:v1", [10, 50, 100], check, LIMITS), cloud_run


def traffic(cloud_run: CloudRun) -> list[str]:
    return [c[5] for c in cloud_run.commands if c[1:4] == ["run", "services", "update-traffic"]]


def test_a_good_archive_takes_all_the_traffic(lit_served_model: Any, golden: Any, capsys: Any) -> None:
    problems, cloud_run = run_canary(lit_served_model.inference_url, golden)
    assert problems == []
    deploy = next(c for c in cloud_run.commands if c[1:3] == ["run", "deploy"])
    assert {
        "--image=img:v1",
        "--no-traffic",
        "--tag=candidate",
        "--region=us-central1",
        "--project=p",
    } <= set(deploy)
    assert traffic(cloud_run) == [
        "--to-tags=candidate=10",
        "--to-tags=candidate=50",
        "--to-tags=candidate=100",
    ]
    assert capsys.readouterr().out.count("golden 4/4") == 4


def test_a_broken_archive_is_rolled_back(mar_file: Path, golden: Any, tmp_path: Path, capsys: Any) -> None:
    from serve.runtimes import start_litserve

    broken = swapped_labels(mar_file, tmp_path / "brain_mri.mar")
    with start_litserve(
        broken, tmp_path / "ls", inference_port=free_port(), metrics_port=free_port(), timeout=180
    ) as server:
        problems, cloud_run = run_canary(server.inference_url, golden)
    assert len(problems) == 1 and problems[0].startswith("golden agreement 0.0% < 100.0%")
    assert traffic(cloud_run) == ["--to-revisions=brain-mri-serve-serving=100", "--remove-tags=candidate"]
    assert "rolled back: all traffic to brain-mri-serve-serving" in capsys.readouterr().out


def test_a_slow_server_is_rolled_back_on_p95(slow_proxy: str, golden: Any) -> None:
    problems, cloud_run = run_canary(slow_proxy, golden)
    assert len(problems) == 1 and problems[0].startswith("p95 ") and problems[0].endswith("> 1500 ms")
    assert traffic(cloud_run)[0] == "--to-revisions=brain-mri-serve-serving=100"


def test_a_server_that_is_gone_fails_on_errors(golden: Any) -> None:
    scans, expected = golden
    seen = probe(f"http://127.0.0.1:{free_port()}", scans, expected, Limits(requests=4, timeout_s=5))
    assert seen.errors == seen.requests == 8 and seen.p95_ms == float("inf")
    assert Limits().problems(seen)[0] == "errors 8/8 (100.0%)"


def test_canary_settings() -> None:
    settings = CloudSettings.from_env({"CANARY_MAX_P95_MS": "250", "CANARY_REQUESTS": "5"}, dry_run=True)
    assert Limits.from_settings(settings) == Limits(max_p95_ms=250.0, requests=5)
    with pytest.raises(CloudSettingsError, match="CANARY_REQUESTS='many' is not a int"):
        Limits.from_settings(CloudSettings.from_env({"CANARY_REQUESTS": "many"}, dry_run=True))
    assert steps_of("25,100") == [25, 100]
    for bad in ("10,50", "50,10,100", "x", "0,100"):
        with pytest.raises(CloudSettingsError, match="rising percentages ending at 100"):
            steps_of(bad)
