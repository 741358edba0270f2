"""The logic behind ``python -m serve``: checks, start, wait, stop on a signal."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from lightning_app.errors import SettingsError, whole_number
from serve.launcher import LaunchError, TorchServe
from serve.lifeline import exit_with_wrapper
from serve.runtimes import RUNTIMES, env_port, start


def launch(env: Mapping[str, str]) -> TorchServe:
    """Start ``SERVE_RUNTIME`` as configured by ``env``; a failure is one line.

    Raises :class:`LaunchError`, or :class:`SettingsError` for a malformed number.
    """
    runtime = env.get("SERVE_RUNTIME", "") or "torchserve"
    if runtime not in RUNTIMES:
        raise LaunchError(f"SERVE_RUNTIME={runtime!r}: expected one of {', '.join(RUNTIMES)}")
    mar = Path(env.get("SERVE_MAR", "model_store/brain_mri.mar"))
    if not mar.is_file():
        raise LaunchError(f"model archive not found: {mar} (build it with: make mar)")
    workdir = Path(env.get("SERVE_WORKDIR") or tempfile.mkdtemp(prefix="brain-mri-serve-"))
    return start(
        runtime,
        mar,
        workdir,
        inference_port=env_port(env, "PORT", 8080),
        management_port=env_port(env, "SERVE_MANAGEMENT_PORT", 8081),
        metrics_port=env_port(env, "SERVE_METRICS_PORT", 8082),
        host=env.get("SERVE_HOST", "127.0.0.1"),
        timeout=float(whole_number(env, "SERVE_START_TIMEOUT", minimum=1) or 120),
        log_to_file=False,
    )


def main(env: Mapping[str, str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM (exit 0) or until the server dies (one line, exit non-zero).

    A start that fails is one line and exit 2.

    Started through a wrapper (``uv run``, as ``make serve`` does), it also stops when the
    wrapper dies (:func:`serve.lifeline.exit_with_wrapper`); the server always stops with
    this process (:func:`serve.lifeline.spawn`).
    """
    env = os.environ if env is None else env

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    watch = exit_with_wrapper(env)
    try:
        try:
            server = launch(env)
        except (LaunchError, SettingsError) as exc:
            print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 2
        management = f"management {server.management_url}, " if server.management_url else ""
        print(
            f"{server.runtime} serving {server.model_name} at {server.predict_url} "
            f"(ready in {server.started_in:.1f} s); {management}metrics {server.metrics_url}/metrics; "
            "Ctrl-C stops",
            flush=True,
        )
        try:
            code = server.process.wait()
        finally:
            server.stop()
        # The server ended on its own (its JVM or API server died): exit non-zero, at once, so
        # that Cloud Run (or a supervisor) restarts the instance. torchserve exits 0 then.
        print(f"error: {server.runtime} stopped unexpectedly (exit code {code})", file=sys.stderr)
        return code if code > 0 else 1
    except KeyboardInterrupt:  # start() stops a half-started server itself
        return 0
    finally:
        if watch is not None:
            watch.set()
        signal.signal(signal.SIGTERM, previous)
