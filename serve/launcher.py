"""Start TorchServe with ``brain_mri.mar`` and wait until it really serves.

:func:`start_torchserve` is shared by ``python -m serve`` (``make serve``), the test
fixtures and the benchmark. Each server runs in its own work directory (TorchServe
writes ``logs/``, its pid file and the unpacked model under it), in its own process
group so that :meth:`TorchServe.stop` ends the JVM and its Python workers, under a
watchdog (:mod:`serve.lifeline`) that stops that group when the launcher dies, even by
SIGKILL, and every wait has a timeout: a handler that fails to import makes TorchServe
hang, not fail.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import ClassVar, TypeVar

from serve.lifeline import Lifeline, group_alive, spawn
from serve.ports import free_ports, port_in_use

CONFIG = Path(__file__).with_name("config.properties")
#: log4j2 configuration: the worker's JSON prediction-log lines reach stdout unprefixed.
LOG_CONFIG = Path(__file__).with_name("log4j2.xml")
#: TorchServe metrics declarations, the handler's model metrics included.
METRICS_CONFIG = Path(__file__).with_name("metrics.yaml")
MODEL_NAME = "brain_mri"


class LaunchError(RuntimeError):
    """TorchServe could not be started (or did not become ready in time)."""


def render_config(overrides: dict[str, str], dest: Path, template: Path = CONFIG) -> Path:
    """Copy ``template`` to ``dest`` with ``overrides`` replacing (or adding) keys."""
    lines, seen = [], set()
    for line in template.read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if not line.lstrip().startswith("#") and "=" in line and key in overrides:
            line = f"{key}={overrides[key]}"
            seen.add(key)
        lines.append(line)
    lines += [f"{k}={v}" for k, v in overrides.items() if k not in seen]
    dest.write_text("\n".join(lines) + "\n")
    return dest


def probe_image() -> bytes:
    """Return a small valid PNG, used to check that a prediction can be served."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (32, 32), 64).save(buf, format="PNG")
    return buf.getvalue()


def _request(url: str, *, data: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/octet-stream"} if data is not None else {}
    req = urllib.request.Request(
        url, data=data, headers=headers, method="POST" if data is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


@dataclass
class TorchServe:
    """A running TorchServe; stop it with :meth:`stop` or use it as a context manager."""

    process: subprocess.Popen[bytes]
    workdir: Path
    inference_url: str
    management_url: str
    metrics_url: str
    model_name: str = MODEL_NAME
    started_in: float = 0.0
    log: Path | None = field(default=None)
    lifeline: Lifeline | None = field(default=None, repr=False)
    #: The runtime's name in messages (:class:`serve.runtimes.LitServe` says ``LitServe``).
    runtime: ClassVar[str] = "TorchServe"

    @property
    def predict_url(self) -> str:
        """``POST`` an image here."""
        return f"{self.inference_url}/predictions/{self.model_name}"

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines TorchServe printed (empty when it logs to the terminal)."""
        if self.log is None or not self.log.is_file():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def model_status(self) -> str:
        """Return the first worker's status (``READY``, ``UNLOADING``, ...) or ``""``."""
        try:
            code, body = _request(f"{self.management_url}/models/{self.model_name}", timeout=3)
            if code == 200:
                workers = json.loads(body)[0].get("workers", [])
                return str(workers[0]["status"]) if workers else ""
        except (OSError, ValueError, KeyError, IndexError):
            pass
        return ""

    def wait_ready(self, timeout: float) -> None:
        """Block until a worker is ``READY`` and a probe image gets a 200 prediction."""
        deadline = time.monotonic() + timeout
        image = probe_image()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LaunchError(
                    f"{self.runtime} exited with code {self.process.returncode}\n{self.log_tail()}"
                )
            if self.model_status() == "READY":
                try:
                    code, _ = _request(
                        self.predict_url, data=image, timeout=max(1.0, deadline - time.monotonic())
                    )
                    if code == 200:
                        return
                except OSError:
                    pass
            time.sleep(0.25)
        raise LaunchError(
            f"{self.runtime} did not serve {self.model_name} within {timeout:.0f} s\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Terminate the JVM and its workers (the whole process group) and wait for them."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        while time.monotonic() < deadline and group_alive(self.process.pid):
            time.sleep(0.1)  # the JVM's shutdown hook stops its Python workers
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # whatever did not stop in time
        self.process.wait(timeout=timeout)
        if self.lifeline is not None:
            self.lifeline.cut()

    def __enter__(self) -> TorchServe:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_torchserve(
    mar: Path,
    workdir: Path,
    *,
    inference_port: int = 8080,
    management_port: int = 8081,
    metrics_port: int = 8082,
    grpc_ports: tuple[int, int] | None = None,
    host: str = "127.0.0.1",
    timeout: float = 120.0,
    log_to_file: bool = True,
    env: dict[str, str] | None = None,
) -> TorchServe:
    """Start TorchServe on ``mar`` and return once a prediction can be served.

    ``host`` is the inference bind address (``127.0.0.1`` unless on Cloud Run); the
    management and metrics APIs always bind ``127.0.0.1``. TorchServe also always opens
    two gRPC ports (unused here; 7070/7071 by default): ``grpc_ports`` picks them, free
    loopback ports when ``None`` so that several servers can run side by side. Raises :class:`LaunchError`
    (after stopping the server) if it exits or is not ready within ``timeout`` seconds.
    """
    mar = Path(mar).resolve()
    if not mar.is_file():
        raise LaunchError(f"model archive not found: {mar} (build it with: make mar)")
    for port in (inference_port, management_port, metrics_port):
        bind = host if port == inference_port else "127.0.0.1"
        if port_in_use(bind, port):
            raise LaunchError(f"port {port} on {bind} is already in use (choose another with PORT=...)")
    workdir = Path(workdir).resolve()
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    model_name = mar.stem
    grpc_inference, grpc_management = grpc_ports or free_ports(
        2, avoid={inference_port, management_port, metrics_port}
    )
    config = render_config(
        {
            "inference_address": f"http://{host}:{inference_port}",
            "management_address": f"http://127.0.0.1:{management_port}",
            "metrics_address": f"http://127.0.0.1:{metrics_port}",
            "grpc_inference_port": str(grpc_inference),
            "grpc_management_port": str(grpc_management),
            "metrics_config": str(METRICS_CONFIG),
        },
        workdir / "config.properties",
    )
    torchserve = shutil.which("torchserve") or str(Path(sys.executable).with_name("torchserve"))
    cmd = [
        torchserve, "--start", "--foreground", "--ncs",
        "--ts-config", str(config),
        "--log-config", str(LOG_CONFIG),
        "--model-store", str(mar.parent),
        "--models", f"{model_name}={mar.name}",
    ]  # fmt: skip
    # TMPDIR: TorchServe's pid file (one per temp dir); TEMP: the JVM's unpacked models.
    run_env = {**os.environ, "TMPDIR": str(workdir / "tmp"), "TEMP": str(workdir / "tmp"), **(env or {})}
    return run_until_ready(
        TorchServe, cmd, workdir=workdir, env=run_env, log_to_file=log_to_file, host=host,
        inference_port=inference_port, management_url=f"http://127.0.0.1:{management_port}",
        metrics_port=metrics_port, model_name=model_name, timeout=timeout,
    )  # fmt: skip


ServerT = TypeVar("ServerT", bound=TorchServe)


def run_until_ready(
    kind: type[ServerT],
    cmd: list[str],
    *,
    workdir: Path,
    env: dict[str, str],
    log_to_file: bool,
    host: str,
    inference_port: int,
    management_url: str,
    metrics_port: int,
    model_name: str,
    timeout: float,
) -> ServerT:
    """Spawn ``cmd`` under the watchdog, as a ``kind`` handle, and return once it serves.

    Its output goes to ``<workdir>/<runtime>.log`` (``log_to_file``) or the terminal. Raises
    :class:`LaunchError` (after stopping it) if it exits or is not ready within ``timeout`` s.
    """
    log = workdir / f"{kind.runtime.lower()}.log" if log_to_file else None
    out = log.open("wb") if log else None
    started = time.monotonic()
    try:
        process, lifeline = spawn(
            cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT if out else None
        )
    finally:
        if out:
            out.close()
    client_host = "127.0.0.1" if host in ("0.0.0.0", "127.0.0.1") else host
    server = kind(
        process=process,
        workdir=workdir,
        inference_url=f"http://{client_host}:{inference_port}",
        management_url=management_url,
        metrics_url=f"http://127.0.0.1:{metrics_port}",
        model_name=model_name,
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
