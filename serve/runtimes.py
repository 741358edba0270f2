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
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from lightning_app.errors import whole_number
from serve.launcher import LaunchError, TorchServe, _request, run_until_ready, start_torchserve
from serve.ports import port_in_use

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
    return run_until_ready(
        LitServe, [sys.executable, "-m", "serve.litserve_app"], workdir=workdir, env=run_env,
        log_to_file=log_to_file, host=host, inference_port=inference_port, management_url="",
        metrics_port=metrics_port, model_name=mar.stem, timeout=timeout,
    )  # fmt: skip


def check_archive(mar: Path) -> Path:
    """``mar`` if it is a model archive; :class:`LaunchError` (one line) if missing or corrupt.

    TorchServe logs a corrupt archive and keeps running without the model (its start would
    only time out, and a supervisor would restart it in a loop): checked before the start,
    it is one clear line instead.
    """
    if not Path(mar).is_file():
        raise LaunchError(f"model archive not found: {mar} (build it with: make mar)")
    try:
        with zipfile.ZipFile(mar) as archive:
            archive.getinfo("MAR-INF/MANIFEST.json")
    except (zipfile.BadZipFile, KeyError, OSError):
        raise LaunchError(
            f"{mar} is not a model archive (corrupt, truncated or without MAR-INF/MANIFEST.json): "
            "rebuild it with: make mar"
        ) from None
    return Path(mar)


def start(runtime: str, mar: Path, workdir: Path, **options: Any) -> TorchServe:
    """Start ``runtime`` (one of :data:`RUNTIMES`) on ``mar``, ``options`` as its start function takes.

    LitServe has no management API: a ``management_port`` is ignored. A missing or corrupt
    ``mar`` is a :class:`LaunchError` before anything starts (:func:`check_archive`).
    """
    mar = check_archive(mar)
    if runtime == "torchserve":
        return start_torchserve(mar, workdir, **options)
    if runtime == "litserve":
        options.pop("management_port", None)
        return start_litserve(mar, workdir, **options)
    raise LaunchError(f"unknown runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")


def env_port(env: Mapping[str, str], name: str, default: int) -> int:
    """``env[name]`` as a TCP port (``default`` when unset or empty).

    Parsed by the settings readers' :func:`~lightning_app.errors.whole_number`: a value that
    is not a port raises its :class:`~lightning_app.errors.SettingsError`, naming ``name``.
    """
    return whole_number(env, name, minimum=1, maximum=65535) or default
