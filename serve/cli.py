"""The logic behind ``python -m serve``: checks, start, wait, stop on a signal."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from serve.launcher import LaunchError, TorchServe, start_torchserve
from serve.lifeline import exit_with_wrapper


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    value = env.get(key, str(default))
    try:
        return int(value)
    except ValueError:
        raise LaunchError(f"{key} must be an integer, got {value!r}") from None


def launch(env: Mapping[str, str]) -> TorchServe:
    """Start TorchServe as configured by ``env``; raises :class:`LaunchError` with one line."""
    mar = Path(env.get("SERVE_MAR", "model_store/brain_mri.mar"))
    if not mar.is_file():
        raise LaunchError(f"model archive not found: {mar} (build it with: make mar)")
    workdir = Path(env.get("SERVE_WORKDIR") or tempfile.mkdtemp(prefix="brain-mri-serve-"))
    return start_torchserve(
        mar,
        workdir,
        inference_port=_int(env, "PORT", 8080),
        management_port=_int(env, "SERVE_MANAGEMENT_PORT", 8081),
        metrics_port=_int(env, "SERVE_METRICS_PORT", 8082),
        host=env.get("SERVE_HOST", "127.0.0.1"),
        timeout=float(_int(env, "SERVE_START_TIMEOUT", 120)),
        log_to_file=False,
    )


def main(env: Mapping[str, str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM or until TorchServe exits; errors are one line, exit 2.

    Started through a wrapper (``uv run``, as ``make serve`` does), it also stops when the
    wrapper dies (:func:`serve.lifeline.exit_with_wrapper`); TorchServe always stops with
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
        except LaunchError as exc:
            print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 2
        print(
            f"serving {server.model_name} at {server.predict_url} (ready in {server.started_in:.1f} s); "
            f"management {server.management_url}, metrics {server.metrics_url}/metrics; Ctrl-C stops",
            flush=True,
        )
        try:
            return server.process.wait()
        finally:
            server.stop()
    except KeyboardInterrupt:  # start_torchserve stops a half-started server itself
        return 0
    finally:
        if watch is not None:
            watch.set()
        signal.signal(signal.SIGTERM, previous)
