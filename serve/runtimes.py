"""The two serving runtimes behind one start call: TorchServe (the default) and LitServe.

:func:`start` starts either on a ``.mar`` and returns once a real prediction was served;
both handles have the same attributes (``.inference_url``, ``.predict_url``,
``.metrics_url``, ``.model_name``, ``.started_in``, ``.stop()``, context manager), so
``python -m serve``, the tests and the benchmarks treat them alike. LitServe runs as
``python -m serve.litserve_app`` in its own process group under the same watchdog
(:mod:`serve.lifeline`) as TorchServe; it has no management API (``management_url`` is
empty), and its readiness is ``GET /ping`` saying ``Healthy`` plus a probe prediction.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from serve.launcher import LaunchError, TorchServe, _request, port_in_use, start_torchserve
from serve.lifeline import spawn

RUNTIMES = ("torchserve", "litserve")


@dataclass
class LitServe(TorchServe):
    """A running LitServe (``python -m serve.litserve_app``): the :class:`TorchServe` handle's interface."""

    runtime: ClassVar[str] = "LitServe"

    def model_status(self) -> str:
        """``READY`` once ``/ping`` says ``Healthy`` (every inference worker loaded), else ``""``."""
        try:
            code, body = _request(f"{self.inference_url}/ping", timeout=3)
            if code == 200 and json.loads(body).get("status") == "Healthy":
                return "READY"
        except (OSError, ValueError, AttributeError):
            pass
        return ""


def start_litserve(
    mar: Path,
    workdir: Path,
    *,
    inference_port: int = 8080,
    metrics_port: int = 8082,
    host: str = "127.0.0.1",
    timeout: float = 120.0,
    log_to_file: bool = True,
    env: dict[str, str] | None = None,
) -> LitServe:
    """Start LitServe on ``mar`` and return once a prediction can be served.

    The arguments mean what they mean for :func:`serve.launcher.start_torchserve` (metrics
    always on ``127.0.0.1``). Raises :class:`LaunchError` (after stopping the server) if it
    exits or is not ready within ``timeout`` seconds.
    """
    mar = Path(mar).resolve()
    if not mar.is_file():
        raise LaunchError(f"model archive not found: {mar} (build it with: make mar)")
    for port, bind in ((inference_port, host), (metrics_port, "127.0.0.1")):
        if port_in_use(bind, port):
            raise LaunchError(f"port {port} on {bind} is already in use (choose another with PORT=...)")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    run_env = {
        **os.environ,
        **(env or {}),
        "SERVE_MAR": str(mar),
        "PORT": str(inference_port),
        "SERVE_METRICS_PORT": str(metrics_port),
        "SERVE_HOST": host,
        "SERVE_WORKDIR": str(workdir),
    }
    log = workdir / "litserve.log" if log_to_file else None
    out = log.open("wb") if log else None
    started = time.monotonic()
    try:
        process, lifeline = spawn(
            [sys.executable, "-m", "serve.litserve_app"],
            cwd=workdir,
            env=run_env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
        )
    finally:
        if out:
            out.close()
    client_host = "127.0.0.1" if host in ("0.0.0.0", "127.0.0.1") else host
    server = LitServe(
        process=process,
        workdir=workdir,
        inference_url=f"http://{client_host}:{inference_port}",
        management_url="",
        metrics_url=f"http://127.0.0.1:{metrics_port}",
        model_name=mar.stem,
        log=log,
        lifeline=lifeline,
    )
    try:
        server.wait_ready(timeout)
    except BaseException:
        server.stop()
        raise
    server.started_in = time.monotonic() - started
    return server


def start(
    runtime: str,
    mar: Path,
    workdir: Path,
    *,
    inference_port: int = 8080,
    management_port: int = 8081,
    metrics_port: int = 8082,
    host: str = "127.0.0.1",
    timeout: float = 120.0,
    log_to_file: bool = True,
    env: dict[str, str] | None = None,
) -> TorchServe:
    """Start ``runtime`` (one of :data:`RUNTIMES`) on ``mar``; LitServe has no management port."""
    if runtime == "torchserve":
        return start_torchserve(
            mar,
            workdir,
            inference_port=inference_port,
            management_port=management_port,
            metrics_port=metrics_port,
            host=host,
            timeout=timeout,
            log_to_file=log_to_file,
            env=env,
        )
    if runtime == "litserve":
        return start_litserve(
            mar,
            workdir,
            inference_port=inference_port,
            metrics_port=metrics_port,
            host=host,
            timeout=timeout,
            log_to_file=log_to_file,
            env=env,
        )
    raise LaunchError(f"unknown runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
